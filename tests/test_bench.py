"""The throughput bench's plumbing: every configuration it can be asked for has a runner, and the
round table's arithmetic."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _bench_ours, throughput  # noqa: E402


def test_every_configuration_of_this_trainer_and_its_limits_has_a_runner():
    """bench/_bench_child.py calls run_<kind> of the kind's module; a lost runner made a whole
    configuration fail only once the bench reached it (learner-limit, 2026-12-03)."""
    args = throughput.parse_args([])
    kinds = {throughput.spec_for(name, "prospector", args, "unused")["kind"]
             for name in throughput.CONFIGS + throughput.SCALING}
    ours = kinds & {"ours", "env_limit", "learner_limit"}
    assert ours == {"ours", "env_limit", "learner_limit"}
    for kind in ours:
        assert callable(getattr(_bench_ours, "run_" + kind, None)), kind


def test_round_breakdown_weights_each_window_by_its_rounds():
    """Window rows hold per-round means; a window of 3 rounds counts 3 times one of 1 round, and a
    row without an sps (the run's first, partial window) is left out. Hand-computed: (3 * 1.0 +
    1 * 2.0) / 4 = 1.25 s of update, (3 * 0.3 + 0.1) / 4 = 0.25 s narrowed."""
    rows = [dict(sps=None, env_steps_in_window=100, learner_update_s=9.0),
            dict(sps=1.0, env_steps_in_window=300, round_wait_sample_s=0.0, round_wait_learn_s=1.1,
                 learner_update_s=1.0, learner_shared_s=0.3),
            dict(sps=1.0, env_steps_in_window=100, round_wait_sample_s=0.4, round_wait_learn_s=2.1,
                 learner_update_s=2.0, learner_shared_s=0.1)]
    b = _bench_ours.round_breakdown(rows, batch=100)
    assert b["learner_update"] == 1.25 and b["learner_shared"] == 0.25
    assert b["wait_learn"] == (3 * 1.1 + 2.1) / 4 and b["wait_sample"] == 0.1
    line = throughput.round_table({"ours-async-1": dict(round=b, sps=100.0, steady_sps_wallclock=100.0,
                                                        config=dict(ppo_num_envs=10, ppo_rollout_steps=20))})
    assert line[-1].startswith("| ours-async-1 | 2.000 |") and line[-1].endswith("| 1.250 | 0.250 |")

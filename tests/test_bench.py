"""The throughput bench's plumbing: every configuration it can be asked for has a runner."""

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

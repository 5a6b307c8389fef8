"""Data-parallel learners (--num-learners, training/distributed.py, ray_app/learner_group.py): two
learners, each on half of a round's env columns with gradients summed over gloo, make the update
one learner makes on the whole batch; and `train --num-learners 2` runs end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.config import ConfigError, config_from_args
from training.distributed import DataParallel, free_port

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "_multi_learner_worker.py"


def test_local_rows_split_a_global_minibatch_by_env_column():
    # 2 steps x 4 columns globally; learner 1 holds columns 2, 3 as its rows t * 2 + (c - 2)
    dp = DataParallel(1, 2)
    groups = [np.array([0, 3, 6, 5]), np.array([7, 2, 1, 4])]
    assert [g.tolist() for g in dp.local_rows(groups, cols=2)] == [[1, 2], [3, 0]]
    assert [g.tolist() for g in DataParallel(0, 2).local_rows(groups, cols=2)] == [[0, 3], [1, 2]]


def test_num_learners_must_divide_the_envs_and_skip_single_learner_features():
    base = {"env": "gym:CartPole-v1", "ppo_num_envs": 8, "ppo_num_workers": 2}
    assert config_from_args({**base, "num_learners": 2}).num_learners == 2
    game = {"env": "prospector", "kickstart_teacher": "none"}  # a preset that leaves overlap on
    assert config_from_args(game).async_rollouts is True, "one learner overlaps by default"
    assert config_from_args({**game, "num_learners": 2}).async_rollouts is False, "several learners run sync rounds"
    with pytest.raises(ConfigError, match="--num-learners: 3 learners cannot split --ppo-num-envs 8"):
        config_from_args({**base, "num_learners": 3})
    with pytest.raises(ConfigError, match="--num-learners.*--ppo-norm-obs"):
        config_from_args({**base, "num_learners": 2, "ppo_norm_obs": True})
    with pytest.raises(ConfigError, match="--num-learners.*--async-rollouts"):
        config_from_args({**base, "num_learners": 2, "async_rollouts": True})


@pytest.mark.slow
def test_two_learners_make_one_learners_update(tmp_path):
    """Two processes (gloo on loopback), two updates of 2 epochs x 4 minibatches on 8 CartPole envs x
    32 steps: the weights equal one learner's on the whole batch within float rounding."""
    sys.path.insert(0, str(REPO / "tests"))
    from _multi_learner_worker import setup

    from training.learner import PPOLearner

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), "2", str(port), str(tmp_path / f"r{rank}.npz")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    cfg, info, batch = setup()
    single = PPOLearner(cfg, info)
    metrics = [single.learn([dict(batch)]) for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    ref = single.weights()
    for rank in (0, 1):
        got = np.load(tmp_path / f"r{rank}.npz")
        assert set(got.files) == set(ref)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-6, err_msg=f"rank {rank}: {k}")
        # the weights moved: equal because both updated alike, not because nothing happened
        assert any(not np.array_equal(got[k], PPOLearner(cfg, info).weights()[k]) for k in ref)
    dp_metrics = json.loads((tmp_path / "r0.npz.json").read_text())
    for a, b in zip(metrics, dp_metrics):
        for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm", "explained_variance"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
        assert b["num_minibatch_updates"] == a["num_minibatch_updates"]


@pytest.mark.slow
def test_train_with_two_learners_end_to_end(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "ray_app", "train", "--env", "gym:CartPole-v1", "--num-learners", "2",
           "--ppo-num-workers", "1", "--ppo-num-envs", "8", "--learner-num-cpus", "1",
           "--total-env-steps", "2048", "--window-env-steps", "512", "--run-root", str(tmp_path), "--run-id", "dp"]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "dp" / "metrics" / "windows.jsonl").read_text().splitlines()]
    assert [r["window_id"] for r in rows] == list(range(4))
    assert [r["env_steps_end"] for r in rows] == [512, 1024, 1536, 2048]
    assert all(r.get("value_loss") is not None for r in rows)
    meta = json.loads((tmp_path / "dp" / "run_metadata.json").read_text())
    assert meta["status"] == "completed" and meta["num_learners"] == 2

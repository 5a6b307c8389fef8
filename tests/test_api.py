"""The Python API (ray_app/api.py): a config from a dict or a file, a run on embedded Ray, its
windows and its policy back, a per-window callback, a clean stop on interrupt."""

import os
import subprocess
import sys
import textwrap

import gymnasium
import numpy as np
import pytest

from ray_app import api
from training.config import ConfigError
from tests.test_train_e2e import REPO


def test_make_config_from_a_dict_a_file_and_keywords(tmp_path):
    (tmp_path / "c.toml").write_text('[env]\nenv = "gym:CartPole-v1"\n[run]\nseed = 4\n')
    cfg = api.make_config({"seed": 9}, config_file=tmp_path / "c.toml", ppo_num_envs=16)
    assert (cfg.env, cfg.seed, cfg.ppo_num_envs) == ("gym:CartPole-v1", 9, 16)
    with pytest.raises(ConfigError, match="--ppo-num-envs"):
        api.make_config({"env": "gym:CartPole-v1", "ppo_num_envs": 0})


@pytest.mark.slow
def test_api_trains_cartpole_and_returns_a_policy_that_acts(tmp_path):
    rows_seen = []
    run = api.train({"env": "gym:CartPole-v1", "total_env_steps": 81_920, "window_env_steps": 20_480,
                     "run_root": str(tmp_path), "run_id": "api"}, on_window=rows_seen.append)
    assert run.metadata["status"] == "completed"
    assert [r["window_id"] for r in run.windows] == [r["window_id"] for r in rows_seen] == [0, 1, 2, 3]
    act = run.policy()
    env = gymnasium.make("CartPole-v1")
    returns = []
    for seed in range(5):
        obs, _ = env.reset(seed=100_000 + seed)
        total, done = 0.0, False
        while not done:
            obs, reward, term, trunc, _ = env.step(int(act(obs[None])[0]))
            total += reward
            done = term or trunc
        returns.append(total)
    assert np.mean(returns) >= 150, returns  # a uniform random policy gets ~22
    assert api.Run.load(tmp_path / "api").windows == run.windows


@pytest.mark.slow
def test_an_interrupt_stops_an_api_run_cleanly(tmp_path):
    """As in a notebook: SIGINT while api.train runs finishes the round, checkpoints, and returns
    the stopped run to the caller, whose process goes on."""
    code = textwrap.dedent(f"""
        import os, signal
        from ray_app import api
        def interrupt(row):
            if row["window_id"] == 1:
                os.kill(os.getpid(), signal.SIGINT)
        run = api.train({{"env": "gym:CartPole-v1", "total_env_steps": 400_000, "window_env_steps": 4096,
                          "run_root": {str(tmp_path)!r}, "run_id": "r"}}, on_window=interrupt)
        print("RESULT", run.metadata["status"], len(run.windows), run.metadata["latest_checkpoint"] is not None)
    """)
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=240)
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT")]
    assert line, res.stdout + res.stderr
    status, windows, checkpointed = line[0].split()[1:]
    assert status == "stopped" and 2 <= int(windows) <= 3 and checkpointed == "True"


@pytest.mark.slow
def test_on_window_returning_false_stops_early(tmp_path):
    run = api.train({"env": "gym:CartPole-v1", "total_env_steps": 400_000, "window_env_steps": 4096,
                     "run_root": str(tmp_path), "run_id": "early"}, on_window=lambda row: row["window_id"] < 1)
    assert run.metadata["status"] == "stopped" and len(run.windows) == 2  # no round after the stop
    assert run.metadata["latest_checkpoint"]["window_id"] == 1

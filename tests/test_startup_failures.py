"""Failures before the first window: one line naming the cause (exit 2 for the user's input, 1 for
infrastructure); an input error leaves no run directory, an infrastructure failure a run marked
failed that --resume starts from zero."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--env", "gym:CartPole-v1", "--ppo-num-envs", "2", "--ppo-num-workers", "1", "--ppo-rollout-steps", "128",
         "--total-env-steps", "1024", "--window-env-steps", "512"]


def train(*args, **env_overrides):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "ray_app", "train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def last_line(res) -> str:
    return res.stderr.strip().splitlines()[-1]


def broken_env(num_envs: int, seed: int = 0):
    """A factory whose env cannot be built where the runners build it (a module missing there)."""
    import a_module_only_the_laptop_has  # noqa: F401


def test_online_logging_without_a_key_is_refused_before_anything_is_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # no ~/.netrc either
    res = subprocess.run([sys.executable, "-m", "ray_app", "train", *SMALL, "--wandb-mode", "online",
                          "--run-root", str(tmp_path / "runs"), "--run-id", "r"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-2000:]
    assert last_line(res).startswith("error: --wandb-mode: online needs a W&B API key")
    assert not (tmp_path / "runs" / "r").exists()


@pytest.mark.slow
def test_an_env_the_runners_cannot_build_leaves_no_run_behind(tmp_path):
    res = train("--env", "tests.test_startup_failures:broken_env", "--ppo-num-envs", "2", "--ppo-num-workers", "1",
                "--total-env-steps", "1024", "--window-env-steps", "512", "--run-root", str(tmp_path), "--run-id", "r")
    assert res.returncode == 2, res.stderr[-2000:]
    assert last_line(res).startswith("error: --env 'tests.test_startup_failures:broken_env': the env could not be "
                                     "built (ModuleNotFoundError: No module named 'a_module_only_the_laptop_has')")
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_cluster_that_is_not_there_fails_in_seconds_and_the_run_resumes_from_zero(tmp_path):
    """RAY_ADDRESS names a port nothing listens on (ray.init would retry for minutes): one line,
    exit 1, the run marked failed; --resume, with a cluster at hand, starts it from zero."""
    res = train(*SMALL, "--run-root", str(tmp_path), "--run-id", "r", RAY_ADDRESS="127.0.0.1:9")
    assert res.returncode == 1, res.stderr[-2000:]
    assert last_line(res).startswith("error: RayUnavailable: cannot start or join Ray (ConnectionError: nothing "
                                     "answers at 127.0.0.1:9")
    meta = json.loads((tmp_path / "r" / "run_metadata.json").read_text())
    assert meta["status"] == "failed" and meta["error"].startswith("RayUnavailable: cannot start or join Ray")
    res = train("--resume", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "no window or checkpoint yet; starting the run again from zero" in res.stdout
    meta = json.loads((tmp_path / "r" / "run_metadata.json").read_text())
    assert meta["status"] == "completed" and meta["env_steps_total"] == 1024

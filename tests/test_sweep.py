"""`prospector sweep`: Ray Tune with ASHA over full training runs, resumable after its driver dies."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ray_app.sweep import load_sweep
from training.config import ConfigError
from tests.test_train_e2e import REPO

SWEEP = """
[sweep]
name = "lr"
num_samples = {samples}
grace_windows = 2
[space]
ppo_learning_rate = {{grid = [1e-6, 3e-3]}}
[env]
env = "gym:CartPole-v1"
[run]
total_env_steps = {steps}
window_env_steps = {window}
run_root = "{root}"
"""


@pytest.mark.parametrize("text, message", [
    ("[space]\nppo_lr = {uniform = [0, 1]}\n", "'ppo_lr' is not a setting"),
    ("[space]\nppo_learning_rate = {normal = [0, 1]}\n", "must be one of"),
    ("[sweep]\nmetrc = 'x'\n[space]\nseed = {grid = [1]}\n", "unknown \\[sweep\\] keys"),
    ("[env]\nenv = 'gym:CartPole-v1'\n", "needs a \\[space\\]"),
    ("[space]\nppo_num_envs = {grid = [0, 8]}\n", "--ppo-num-envs"),
])
def test_bad_sweep_files_fail_before_anything_starts(tmp_path, text, message):
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_sweep(tmp_path / "s.toml")


def sweep(*args, address, wait=True):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "ray_app", "sweep", *args, "--address", address], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    if wait:
        out, _ = proc.communicate(timeout=480)
        return proc.returncode, out
    return proc


@pytest.mark.slow
def test_sweep_ranks_learning_rates_and_resumes_after_its_driver_is_killed(tmp_path):
    from ray.cluster_utils import Cluster

    (tmp_path / "s.toml").write_text(SWEEP.format(samples=2, steps=8192, window=2048, root=tmp_path / "runs"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4})
    try:
        proc = sweep("--config", str(tmp_path / "s.toml"), address=cluster.address, wait=False)
        deadline = time.time() + 240
        while time.time() < deadline and not list((tmp_path / "runs").glob("lr-*/metrics/windows.jsonl")):
            time.sleep(1)
        time.sleep(3)  # Tune saves the experiment's state every few seconds
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep's driver dies mid-trial
        proc.wait()
        code, out = sweep("--config", str(tmp_path / "s.toml"), "--resume", address=cluster.address)
        assert code == 0, out[-4000:]
    finally:
        cluster.shutdown()
    table = out[out.index("| return_mean |"):].splitlines()
    rows = [line for line in table if line.startswith("| ") and "ppo_learning_rate" in line]
    assert len(rows) == 4, table
    assert "ppo_learning_rate=0.003" in rows[0] and "ppo_learning_rate=1e-06" in rows[-1]
    best = json.loads((tmp_path / "runs" / "sweeps" / "lr" / "best_config.json").read_text())
    assert best["ppo_learning_rate"] == 0.003 and best["env"] == "gym:CartPole-v1"

"""Learning checks: short real runs that must beat a baseline."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.run_store import RunStore

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_cartpole_reaches_475_within_200k_steps(tmp_path):
    """The issue's exact command, every other flag at its default (the CartPole preset). The run
    is stopped (SIGINT: finish the round, checkpoint, exit) at its first window at or above 475,
    so the 3-minute limit measures learning, not the ~80 s the rest of the 200k steps take (up to
    twice that when the VM is slow)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    store = RunStore(tmp_path / "cartpole")  # read-only: the run creates the folder
    proc = subprocess.Popen(
        [sys.executable, "-m", "ray_app", "train", "--env", "gym:CartPole-v1", "--total-env-steps", "200000",
         "--window-env-steps", "10000", "--seed", "0", "--run-root", str(tmp_path), "--run-id", "cartpole"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 180
    try:
        while proc.poll() is None and time.time() < deadline:
            if any((r["return_mean"] or 0) >= 475 for r in store.read_windows()):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
        out = proc.communicate(timeout=max(1.0, deadline - time.time()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130), out[-3000:]  # 130: stopped by the SIGINT above
    rows = store.read_windows()
    returns = [r["return_mean"] for r in rows if r["return_mean"] is not None]
    assert max(returns) >= 475, returns
    first = next(r["env_steps_end"] for r in rows if (r["return_mean"] or 0) >= 475)
    assert first <= 200_192, first  # whole rounds of 256 steps
    print(f"CartPole-v1 first window with return_mean >= 475 ends at {first} env steps")


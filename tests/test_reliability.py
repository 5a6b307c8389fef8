"""Fault tolerance and stopping, driven by the test-only --fault-inject switch and real signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

SMALL = ["--env", "gym:CartPole-v1", "--ppo-num-envs", "4", "--ppo-num-workers", "2", "--ppo-rollout-steps", "128",
         "--ppo-update-epochs", "2", "--ppo-num-minibatches", "2", "--window-env-steps", "1024"]


def env():
    e = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    e.pop("RAY_ADDRESS", None)
    return e


def run(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "ray_app", "train", *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def read_run(run_dir: Path):
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    windows = run_dir / "metrics" / "windows.jsonl"
    rows = [json.loads(line) for line in windows.read_text().splitlines()] if windows.exists() else []
    return meta, rows


def assert_contiguous(rows, total):
    assert [r["window_id"] for r in rows] == list(range(len(rows))), "no duplicate or missing window"
    for prev, row in zip(rows, rows[1:]):
        assert row["env_steps_start"] == prev["env_steps_end"]
    assert rows[-1]["env_steps_end"] == total


def test_runner_loss_and_hang_are_replaced_and_accounting_stays_exact(tmp_path):
    """Runner 1 dies in its 2nd rollout; runner 0 hangs in its 4th, and after --runner-timeout-s it
    is handled as a dead one. Both are replaced and their rollouts collected again."""
    res = run(*SMALL, "--total-env-steps", "4096", "--run-root", str(tmp_path), "--run-id", "r",
              "--runner-timeout-s", "5", "--fault-inject", "runner=1@2,runner-hang=0@4")
    assert res.returncode == 0, res.stderr[-3000:]
    meta, rows = read_run(tmp_path / "r")
    assert meta["status"] == "completed" and meta["runner_restarts"] == 2 and meta["learner_restarts"] == 0
    assert meta["env_steps_total"] == 4096
    assert_contiguous(rows, 4096)
    assert "env runner 1 lost (ActorDiedError)" in res.stderr and "env runner 0 lost (RunnerHung)" in res.stderr


def test_runner_that_keeps_dying_fails_the_run_clearly(tmp_path):
    res = run(*SMALL, "--total-env-steps", "4096", "--run-root", str(tmp_path), "--run-id", "r",
              "--max-runner-restarts-per-window", "2", "--fault-inject", "runner=0@1x10")
    assert res.returncode == 1
    meta, _ = read_run(tmp_path / "r")
    assert meta["status"] == "failed"
    assert meta["error"].startswith("RunnerKeepsDying: env runner 0 died 3 times in one window")
    assert "--max-runner-restarts-per-window 2" in meta["error"]


@pytest.mark.parametrize("fault", ["learner@3", "learner-hang@3"])
def test_learner_that_keeps_dying_fails_with_the_resume_command(tmp_path, fault):
    """A lost learner sends the run back to its latest checkpoint (the chaos run replays after
    SIGKILLs); past --max-learner-restarts the run fails naming the resume command. A learner that
    hangs past --learner-timeout-s is a lost one."""
    res = run(*SMALL, "--total-env-steps", "4096", "--run-root", str(tmp_path), "--run-id", "r",
              "--max-learner-restarts", "0", "--learner-timeout-s", "10", "--fault-inject", fault)
    assert res.returncode == 1
    meta, _ = read_run(tmp_path / "r")
    assert meta["status"] == "failed"
    assert f"resume with: prospector train --resume {tmp_path / 'r'}" in meta["error"]
    if fault == "learner-hang@3":
        assert "no answer within --learner-timeout-s 10: hung" in meta["error"]


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "ray_app", "train", *args], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_until(ready, proc, what: str, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} was written")


def wait_for_window(run_dir: Path, proc, timeout=120):
    path = run_dir / "metrics" / "windows.jsonl"
    _wait_until(lambda: path.exists() and path.read_text().strip(), proc, "window", timeout)


def wait_for_checkpoint(run_dir: Path, proc, timeout=120):
    """Until run_metadata.json names a checkpoint. The window row is written before its checkpoint,
    so a row alone does not mean a checkpoint exists yet."""
    path = run_dir / "run_metadata.json"
    _wait_until(lambda: path.exists() and json.loads(path.read_text()).get("latest_checkpoint"), proc,
                "checkpoint", timeout)


def test_sigint_stops_cleanly_and_resume_completes(tmp_path):
    run_dir = tmp_path / "r"
    proc = start(*SMALL, "--total-env-steps", "400000", "--run-root", str(tmp_path), "--run-id", "r")
    wait_for_window(run_dir, proc)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    meta, rows = read_run(run_dir)
    assert meta["status"] == "stopped" and meta["finished_at"]
    assert meta["latest_checkpoint"]["window_id"] == rows[-1]["window_id"], "final checkpoint at the last row"
    assert f"resume with: prospector train --resume {run_dir}" in out
    stopped_at = rows[-1]["env_steps_end"]

    # windows close at multiples of 1,024 wherever the stop landed: end the resumed run on one
    total = (stopped_at // 1024 + 2) * 1024
    res = run("--resume", str(run_dir), "--total-env-steps", str(total))
    assert res.returncode == 0, res.stderr[-3000:]
    meta, rows = read_run(run_dir)
    assert meta["status"] == "completed" and len(meta["resumes"]) == 1
    assert_contiguous(rows, total)
    assert json.loads((run_dir / "config.json").read_text())["total_env_steps"] == 400000, "config.json never rewritten"


@pytest.mark.parametrize("gap_s", [0.05, 0.3])
def test_second_sigint_exits_at_once_without_corrupting_files(tmp_path, gap_s):
    """An interrupted exit wherever the second signal lands: inside the round (0.05 s) or while Ray
    shuts down after the final checkpoint (~0.3 s here; exit code 1 when the run put the host's
    handler back before shutting Ray down: the whole suite once hit it with 0.05 s on a loaded
    machine). 130, or death by SIGINT itself when the signal lands in the interpreter's own
    teardown, after every file is written (Python puts the default handler back there)."""
    run_dir = tmp_path / "r"
    proc = start(*SMALL, "--total-env-steps", "400000", "--run-root", str(tmp_path), "--run-id", "r")
    wait_for_window(run_dir, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)
    meta, rows = read_run(run_dir)  # both still parse
    assert rows and meta["run_id"] == "r"
    assert not list(run_dir.rglob("*.tmp*")), "no temp file left where a reader looks"


MID_WRITE_EXIT = """
import os, signal, sys, threading
from pathlib import Path
from ray_app.driver import RunState, _install_signal_handlers
from training.storage import _atomic_write, atomic_write_bytes

folder = Path(sys.argv[1])
for name in ("run_metadata.json", "lease.json"):
    atomic_write_bytes(folder / name, b"old")
_install_signal_handlers(RunState())
in_write = threading.Event()

def lease_beat(f):  # another thread's write, cut short where it stands
    f.write(b"half")
    in_write.set()
    threading.Event().wait()

threading.Thread(target=_atomic_write, args=(folder / "lease.json", lease_beat), daemon=True).start()
in_write.wait()

def metadata(f):  # the main thread's write: both signals land in it
    f.write(b"half")
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)
    f.write(b" and the rest")

_atomic_write(folder / "run_metadata.json", metadata)
"""


def test_second_signal_in_the_middle_of_writes_leaves_only_whole_files(tmp_path):
    """The second signal exits at once (os._exit): the temp files of the writes it cuts short, in
    the main thread or the lease's heartbeat thread, go first; the files themselves stay whole."""
    proc = subprocess.run([sys.executable, "-c", MID_WRITE_EXIT, str(tmp_path)], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "second interrupt: exiting immediately" in proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["lease.json", "run_metadata.json"]
    assert all((tmp_path / name).read_bytes() == b"old" for name in os.listdir(tmp_path))


def test_sigterm_to_the_whole_process_group_ends_as_stopped(tmp_path):
    """`timeout`, `kill -- -PGID` and some schedulers signal every process of the group, Ray's
    own processes included: the run must end as stopped, not try to recover from the losses."""
    run_dir = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "ray_app", "train", *SMALL, "--total-env-steps", "400000",
                             "--run-root", str(tmp_path), "--run-id", "r"], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    # the signal also ends the learner, so only a checkpoint written before it can stand
    wait_for_checkpoint(run_dir, proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    meta, rows = read_run(run_dir)
    assert meta["status"] == "stopped", out[-2000:]
    assert "replaying" not in out and "starting a replacement" not in out
    assert rows and meta["latest_checkpoint"]["window_id"] >= 0


COMPARED = ("env_steps_start", "env_steps_end", "episodes_completed", "reward_sum", "return_mean", "policy_loss",
            "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "learning_rate")


GAME_WITH_TEACHER = ["--env", "prospector", "--env-time-max", "300", "--kickstart-teacher", "cautious_scanner",
                     "--kickstart-steps", "2048", "--kickstart-rollin-steps", "200", "--kickstart-rollin-prob", "0.5"]
RESUMED_RUNS = {
    # the game with kickstarting and roll-ins (teacher state, roll-in draws), overlapped (the default:
    # the round after a checkpoint is held back, so the runners' states match it) and sync
    "prospector": GAME_WITH_TEACHER,
    "prospector-sync": [*GAME_WITH_TEACHER, "--no-async-rollouts"],
    # continuous defaults: observation statistics in the weights, the reward scaler in the learner;
    # windows of 1,000 steps close mid-round (rounds of 512), so the open window is in the checkpoint
    "continuous": ["--env", "training.envs.examples:reach", "--window-env-steps", "1000"],
}


@pytest.mark.parametrize("case", sorted(RESUMED_RUNS))
def test_resume_replays_the_same_windows_as_an_uninterrupted_run(tmp_path, case):
    """Same runners: resuming from a checkpoint (window 1, in a copy of the run) gives, window by
    window, the losses and returns of the run that was never interrupted."""
    import shutil

    args = ["--ppo-num-envs", "8", "--ppo-num-workers", "2", "--ppo-rollout-steps", "64", "--ppo-num-minibatches", "2",
            "--ppo-update-epochs", "2", "--policy-hidden", "32,32", "--window-env-steps", "1024",
            "--total-env-steps", "4096", "--seed", "3", *RESUMED_RUNS[case]]
    res = run(*args, "--run-root", str(tmp_path), "--run-id", "a")
    assert res.returncode == 0, res.stderr[-3000:]
    _, uninterrupted = read_run(tmp_path / "a")
    assert len(uninterrupted) == 4

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for late in ("ckpt_000002.pt", "ckpt_000003.pt"):
        (tmp_path / "b" / "checkpoints" / late).unlink()
    res = run("--resume", str(tmp_path / "b"))
    assert res.returncode == 0, res.stderr[-3000:]
    meta, resumed = read_run(tmp_path / "b")
    assert meta["resumes"][-1]["from_window"] == 1 and meta["resumes"][-1]["exact_env_state"] is True
    assert [r["window_id"] for r in resumed] == [0, 1, 2, 3]
    for a, b in zip(uninterrupted[2:], resumed[2:]):
        for key in COMPARED:
            assert a[key] == b[key], (a["window_id"], key, a[key], b[key])


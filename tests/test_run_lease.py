"""One writer per run directory: the lease a driver holds while it runs (training/run_lease.py)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.run_lease import LEASE_FILE, LeaseError, RunLease
from training.run_store import RunStore

REPO = Path(__file__).resolve().parents[1]


def test_a_second_driver_is_refused_until_the_first_releases(tmp_path):
    first = RunLease(tmp_path).acquire()
    with pytest.raises(LeaseError, match=rf"another driver is writing this run \({socket.gethostname()}:{os.getpid()}"):
        RunLease(tmp_path).acquire()
    first.release()
    assert not (tmp_path / LEASE_FILE).exists()
    RunLease(tmp_path).acquire().release()


def test_a_stale_lease_is_taken_over_and_its_old_holder_leaves_it_alone(tmp_path):
    """The old holder still beats, but its clock is stuck (a hung driver's heartbeats carry no news)."""
    old = RunLease(tmp_path, stale_s=60, heartbeat_s=0.02, clock=lambda: 1000.0).acquire()
    with pytest.raises(LeaseError, match="wait 30 s"):
        RunLease(tmp_path, stale_s=60, clock=lambda: 1030.0).acquire()
    new = RunLease(tmp_path, stale_s=60, heartbeat_s=3600, clock=lambda: 1061.0).acquire()
    time.sleep(0.2)  # the old holder's beats meanwhile find the new token and stop
    assert json.loads((tmp_path / LEASE_FILE).read_text()) == {"owner": new.owner, "token": new.token,
                                                              "heartbeat": 1061.0}
    old.release()  # no longer the owner: its release leaves the new lease alone
    assert (tmp_path / LEASE_FILE).exists()
    new.release()


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path):
    lease = RunLease(tmp_path, heartbeat_s=0.05).acquire()
    first = json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads((tmp_path / LEASE_FILE).read_text())["heartbeat"] > first
    lease.release()


def test_a_lease_of_a_process_gone_from_this_machine_is_taken_at_once(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owner = f"{socket.gethostname()}:{int(gone.stdout)}"
    (tmp_path / LEASE_FILE).write_text(json.dumps({"owner": owner, "token": "x", "heartbeat": time.time()}))
    RunLease(tmp_path).acquire().release()


def test_resuming_a_run_another_driver_holds_fails_in_one_line_and_writes_nothing(tmp_path):
    store = RunStore.create(tmp_path, "held")
    store.write_config({"env": "gym:CartPole-v1"})
    store.save_checkpoint(0, {"window_id": 0})
    before = {p: p.read_bytes() for p in store.run_dir.rglob("*") if p.is_file()}
    lease = RunLease(store.run_dir).acquire()  # this test process stands for the other driver
    try:
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
        res = subprocess.run([sys.executable, "-m", "ray_app", "train", "--resume", str(store.run_dir)], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    finally:
        lease.release()
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "another driver is writing this run" in \
        res.stderr, res.stderr[-2000:]
    assert {p: p.read_bytes() for p in store.run_dir.rglob("*") if p.is_file()} == before

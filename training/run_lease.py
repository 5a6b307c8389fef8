"""One writer per run directory: a lease file (``lease.json``) the driver holds while it runs.

Two drivers writing one run (a job submitted twice, a ``--resume`` while the first run still
trains) would interleave windows and overwrite each other's checkpoints. The driver takes the lease
before it writes anything and keeps it fresh from a background thread (``heartbeat``); another
driver finds a fresh lease and stops with the owner named. A lease whose heartbeat is older than
``stale_s`` belongs to a driver that died without releasing it (killed, its machine gone): the next
driver takes it over, at once where the owner was a process of this machine that no longer exists
(a killed sweep's trials resume their runs right away). Releasing deletes the file.

On a remote run directory (``s3://...``, training/storage.py) the same file is an object. An object
store has no exclusive create here, so taking the lease is best effort: write the record, wait
``settle_s`` (1 s) for a driver that read the old lease at the same moment to write its own, then
read it back; the driver whose token is not there stops. A remote read that fails (the network)
is not taken for an absent lease: acquire raises, and the heartbeat tries again at its next beat.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from training.run_store import RunStoreError
from training.storage import atomic_write_json
from training.storage import RemotePath, as_path

LEASE_FILE = "lease.json"
HEARTBEAT_S = 10.0
STALE_S = 60.0
REMOTE_SETTLE_S = 1.0


class LeaseError(RunStoreError):
    """The run directory is held by another driver."""


class RunLease:
    def __init__(self, run_dir: str | os.PathLike | RemotePath, stale_s: float = STALE_S,
                 heartbeat_s: float = HEARTBEAT_S, clock=time.time, settle_s: float | None = None):
        self.path = as_path(run_dir) / LEASE_FILE
        self.remote = isinstance(self.path, RemotePath)
        self.stale_s, self.heartbeat_s, self.clock = float(stale_s), float(heartbeat_s), clock
        # remote: the wait between writing the lease and reading it back (no exclusive create there)
        self.settle_s = float(settle_s if settle_s is not None else REMOTE_SETTLE_S if self.remote else 0.0)
        self.token = uuid.uuid4().hex
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _record(self) -> dict:
        return {"owner": self.owner, "token": self.token, "heartbeat": self.clock()}

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except OSError:
            if self.remote:
                raise  # the store did not answer: that says nothing about the lease
            return {}
        except ValueError:
            return {}  # torn or unreadable: no owner can be named, so it cannot be fresh either

    @staticmethod
    def _owner_gone(owner: str) -> bool:
        """True when ``owner`` (host:pid) was a process of this machine that has exited."""
        host, _, pid = owner.rpartition(":")
        if host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def acquire(self) -> "RunLease":
        """Take the lease, or raise ``LeaseError`` naming the driver that holds it."""
        try:
            return self._acquire()
        except OSError as exc:
            if not self.remote:
                raise
            raise LeaseError(f"{self.path}: cannot read or write the run's lease ({exc})") from None

    def _acquire(self) -> "RunLease":
        held = self.read()
        if held and not self._owner_gone(held.get("owner", "")):
            age = self.clock() - float(held.get("heartbeat", 0.0))
            if age < self.stale_s:
                raise LeaseError(
                    f"{self.path.parent}: another driver is writing this run ({held.get('owner', '?')}, last "
                    f"heartbeat {age:.0f} s ago); stop it first, or wait {self.stale_s - age:.0f} s if it is gone")
        atomic_write_json(self.path, self._record())
        if self.settle_s:
            time.sleep(self.settle_s)
        if (self.read() or {}).get("token") != self.token:  # another driver took it in the same instant
            raise LeaseError(f"{self.path.parent}: another driver took this run's lease at the same time")
        self._thread = threading.Thread(target=self._beat, name="run-lease-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                if (self.read() or {}).get("token") != self.token:
                    return  # taken over (we were stale): never write over the new owner's lease
                atomic_write_json(self.path, self._record())
            except OSError:
                continue  # a store that did not answer this time (the network): beat again next time

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if (self.read() or {}).get("token") == self.token:
                self.path.unlink(missing_ok=True)
        except OSError:
            if not self.remote:
                raise  # remote: a lease left behind goes stale and is taken over

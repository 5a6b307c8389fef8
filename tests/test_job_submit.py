"""`ray job submit` for real, against a Ray head this module starts and stops itself.

The head binds to loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, --dashboard-host 127.0.0.1)
and keeps all its files in its own short temp dir (Unix socket paths must stay under ~107 chars).

Token authentication: Ray 2.60 enables token auth for a new local cluster and `ray start` turns
it on whenever a token file exists (e.g. ~/.ray/auth_token), so whether a test head is
authenticated would otherwise depend on the machine. This test makes it explicit and mirrors the
production setup of infra/cluster.yaml instead of opting out: it generates a fresh random token
into its temp dir and sets RAY_AUTH_MODE=token plus RAY_AUTH_TOKEN_PATH=<that file> for the head
and for the `ray job` client. Nothing is read from or written to the real ~/.ray. The jobs
(drivers) inherit both variables from the head's processes, which is how their ray.init()
authenticates. A client without the token must be refused (checked below).

Teardown never runs `ray stop` (that kills every Ray process on the machine, matched by name):
the head runs as `ray start --block` in its own session; we SIGTERM that process (it shuts its
children down), SIGKILL the process group if it lingers, and then check that no process of ours
(same process group, or the temp dir on its command line: raylet, gcs_server, ...) is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY = BIN / "ray"
RUNTIME_ENV = json.dumps({"excludes": ["runs/", ".venv/", ".git/", "wandb/"]})
HEAD_START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 480


@dataclass
class Head:
    url: str
    env: dict
    temp_dir: str
    proc: subprocess.Popen
    token: str


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _head_log(temp_dir: str) -> str:
    try:
        return Path(temp_dir, "head.log").read_text(errors="replace")[-4000:]
    except OSError:
        return "(no head log)"


def _wait_for_dashboard(url: str, token: str, proc: subprocess.Popen, temp_dir: str) -> dict:
    """Poll the dashboard's version endpoint (with the token) until it answers."""
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    req = urllib.request.Request(url + "/api/version", headers={"Authorization": f"Bearer {token}"})
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{_head_log(temp_dir)}")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as e:
            last = e
            time.sleep(0.5)
    pytest.fail(f"dashboard at {url} not up after {HEAD_START_TIMEOUT_S}s ({last}):\n{_head_log(temp_dir)}")


def _our_processes(pgid: int, temp_dir: str) -> list[tuple[int, str]]:
    """Processes of our head: in its process group, or naming its temp dir (raylet, gcs_server...)."""
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may contain spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # zombie: already dead, waiting to be reaped
            continue
        if int(fields[2]) == pgid or temp_dir in cmdline:
            found.append((pid, cmdline[:160]))
    return found


def _stop_head(proc: subprocess.Popen, temp_dir: str) -> list[tuple[int, str]]:
    """Stop only our head; return the processes that had to be force-killed afterwards."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` then stops its own children
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    deadline = time.monotonic() + 15
    leftovers = _our_processes(proc.pid, temp_dir)
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.5)
        leftovers = _our_processes(proc.pid, temp_dir)
    for pid, _ in leftovers:  # ours for sure: same process group or our unique temp dir
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


@pytest.fixture(scope="module")
def ray_head():
    if not RAY.exists():
        pytest.skip(f"no ray CLI next to {sys.executable}")
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: socket paths live under it
    token = secrets.token_hex(32)
    token_path = Path(temp_dir, "auth_token")
    token_path.write_text(token)
    token_path.chmod(0o600)

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # keep every Ray socket on loopback
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",
        WANDB_MODE="disabled",
        WANDB_SILENT="true",
        # The job's `python` must be this venv's (raylet -> job supervisor -> entrypoint shell).
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    gcs_port, dash_port, client_port, agent_port = _free_ports(4)
    cmd = [
        str(RAY), "start", "--head", f"--port={gcs_port}",
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
        # Fixed defaults (10001, 52365) would clash with another head on this machine.
        "--ray-client-server-port", str(client_port), "--dashboard-agent-listen-port", str(agent_port),
        "--num-cpus", "2", "--object-store-memory", "200000000", "--disable-usage-stats",
        "--temp-dir", temp_dir, "--block",
    ]
    with open(Path(temp_dir, "head.log"), "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=temp_dir)
    url = f"http://127.0.0.1:{dash_port}"
    leftovers: list = []
    try:
        version = _wait_for_dashboard(url, token, proc, temp_dir)
        assert version.get("ray_version") == "2.60.0", version
        yield Head(url=url, env=env, temp_dir=temp_dir, proc=proc, token=token)
    finally:
        leftovers = _stop_head(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"processes of the test head survived its shutdown (killed now): {leftovers}"


def _submit(head: Head, entrypoint: list[str], env: dict | None = None, timeout: int = JOB_TIMEOUT_S):
    cmd = [str(RAY), "job", "submit", "--address", head.url, "--working-dir", str(REPO),
           "--runtime-env-json", RUNTIME_ENV, "--", *entrypoint]
    return subprocess.run(cmd, env=env or head.env, cwd=str(REPO), capture_output=True, text=True,
                          timeout=timeout)


def test_client_without_token_is_refused(ray_head):
    env = {k: v for k, v in ray_head.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    env["RAY_AUTH_MODE"] = "disabled"  # sends no token, whatever ~/.ray holds
    res = _submit(ray_head, ["python", "-c", "print('must not run')"], env=env, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "must not run" not in out
    assert "Authentication" in out or "Unauthorized" in out, out[-2000:]


def test_job_submit_uploads_working_dir_and_connects(ray_head):
    """The plumbing on its own: upload, driver connects to the cluster with the token, exit 0."""
    probe = (
        "import os, ray, ray_app; ray.init(); "
        "print('JOB-OK', os.getcwd(), int(ray.cluster_resources().get('CPU', 0)))"
    )
    res = _submit(ray_head, ["python", "-c", probe], timeout=240)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("JOB-OK")), None)
    assert line is not None, out[-4000:]
    _, cwd, cpus = line.split()
    assert "working_dir_files" in cwd  # the driver runs in Ray's unpacked copy of the repo
    assert cpus == "2"
    # The teardown's leftover check must be able to see our head's daemons at all.
    running = " ".join(cmd for _, cmd in _our_processes(ray_head.proc.pid, ray_head.temp_dir))
    assert "gcs_server" in running and "raylet" in running, running


def test_train_job_writes_run_artifacts(ray_head, tmp_path):
    run_root = (tmp_path / "runs").resolve()  # absolute: a relative one would land in Ray's temp copy
    res = _submit(ray_head, [
        "python", "-m", "ray_app", "train", "--trainer-backend", "random", "--env", "prospector",
        "--total-env-steps", "4096", "--window-env-steps", "2048", "--ppo-num-envs", "8",
        "--ppo-num-workers", "2", "--run-root", str(run_root), "--run-id", "jobtest",
        "--wandb-mode", "disabled",
    ])
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"job did not succeed (the CLI exits 0 only on SUCCEEDED):\n{out[-6000:]}"
    assert "succeeded" in out

    run_dir = run_root / "jobtest"
    meta = json.loads((run_dir / "run_metadata.json").read_text())
    assert meta["status"] == "completed", meta
    rows = [ln for ln in (run_dir / "metrics" / "windows.jsonl").read_text().splitlines() if ln.strip()]
    assert len(rows) == 2, rows
    assert (run_dir / "config.json").is_file()
    assert (run_dir / "checkpoints" / "ckpt_000000.pt").is_file()

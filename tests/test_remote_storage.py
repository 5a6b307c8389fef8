"""Runs on an object store (training/storage.py): every test talks to a real S3-compatible server
(moto in server mode, on loopback, started and stopped here) through pyarrow's S3 filesystem, the
way a run on `--run-root s3://bucket/runs` does."""

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from moto.server import ThreadedMotoServer
from tests.test_sweep import SWEEP
from training.checkpoints import load_checkpoint
from training.replay_index import publish_replay
from training.run_lease import LEASE_FILE, LeaseError, RunLease
from training.run_store import RunStore, RunStoreError
from training.storage import atomic_write_bytes
from training.storage import RemotePath, as_path

REPO = Path(__file__).resolve().parents[1]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """The server's endpoint (host:port); credentials in the environment, as a user's would be."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in CREDENTIALS.items():
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        yield f"{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3):
    """A fresh bucket, and the pyarrow filesystem to look at it directly."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3, scheme="http", access_key="testing", secret_key="testing",
                           region="us-east-1", allow_bucket_creation=True)
    name = f"b-{uuid.uuid4().hex[:12]}"
    fs.create_dir(name)
    return name, fs


def root_uri(s3, name: str) -> str:
    return f"s3://{name}/runs?endpoint_override={s3}&scheme=http"


def objects(fs, name: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(name, recursive=True))
    return {i.path[len(name) + 1:]: fs.open_input_stream(i.path).read() for i in infos if i.type == pafs.FileType.File}


def _row(i: int, ret: float | None = None) -> dict:
    return {"window_id": i, "env_steps_total": 100 * (i + 1), "return_mean": ret}


@pytest.fixture
def local_cwd(tmp_path, monkeypatch):
    """The working directory, which a remote run must leave empty (no `s3:` folder, no `runs`)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_uris_become_remote_paths_and_local_paths_stay_paths(s3, tmp_path):
    uri = root_uri(s3, "bkt")
    remote = as_path(uri)
    assert isinstance(remote, RemotePath) and str(remote) == uri
    child = remote / "r1" / "checkpoints/ckpt_000001.pt"
    assert str(child) == f"s3://bkt/runs/r1/checkpoints/ckpt_000001.pt?endpoint_override={s3}&scheme=http"
    assert child.name == "ckpt_000001.pt" and child.parent.parent == remote / "r1"
    with pytest.raises(TypeError):
        Path(remote)  # no __fspath__: a stray Path() fails instead of writing into a local "s3:" folder
    assert as_path(f"file://{tmp_path}/runs") == tmp_path / "runs"
    assert as_path("runs/r1") == Path("runs/r1")
    with pytest.raises(OSError, match="secret in the URI"):
        as_path("s3://key:secret@bkt/runs")


def test_a_run_round_trips_on_s3(s3, bucket, local_cwd):
    name, fs = bucket
    store = RunStore.create(root_uri(s3, name), "r1")
    assert store.remote and store.run_id == "r1" and isinstance(store.run_dir, RemotePath)
    assert store.read_metadata() is None and store.read_windows() == []
    store.write_config({"env": "gym:CartPole-v1", "seed": 0})
    with pytest.raises(RunStoreError, match="written once"):
        store.write_config({})
    store.write_metadata({"status": "running"})
    returns = [0.5, 3.0, None, 1.0, 2.0, 2.5]
    for i, ret in enumerate(returns):
        store.append_window(_row(i, ret))
        rel = store.save_checkpoint(i, {"window_id": i, "env_steps_total": 100 * (i + 1)})
        assert rel == f"checkpoints/ckpt_{i:06d}.pt"
    with pytest.raises(RunStoreError, match="does not follow"):
        store.append_window(_row(3))
    deleted = store.prune_checkpoints(2)
    assert sorted(p.name for p in deleted) == ["ckpt_000000.pt", "ckpt_000002.pt", "ckpt_000003.pt"]
    assert [p.name for p in store.list_checkpoints()] == ["ckpt_000001.pt", "ckpt_000004.pt", "ckpt_000005.pt"]
    assert store.load_checkpoint("checkpoints/ckpt_000004.pt")["env_steps_total"] == 500
    assert load_checkpoint(str(store.run_dir / "checkpoints" / "ckpt_000005.pt"))["window_id"] == 5
    store.write_metadata({"status": "stopped"})

    # what a driver on another node finds: the whole run, through the URI alone
    other = RunStore.open(str(store.run_dir))
    assert other.read_config() == {"env": "gym:CartPole-v1", "seed": 0}
    assert other.read_metadata() == {"status": "stopped"}
    assert [r["window_id"] for r in other.read_windows()] == list(range(6))
    fs.delete_file(f"{name}/runs/r1/checkpoints/ckpt_000005.pt")  # lost with the old driver: resume from 4
    path, state, rows = other.prepare_resume()
    assert path == "checkpoints/ckpt_000004.pt" and state["window_id"] == 4 and len(rows) == 5
    assert [r["window_id"] for r in RunStore.open(str(store.run_dir)).read_windows()] == list(range(5))
    other.append_window(_row(5, 9.0))

    stored = objects(fs, name)
    assert sorted(stored) == ["runs/r1/checkpoints/ckpt_000001.pt", "runs/r1/checkpoints/ckpt_000004.pt",
                              "runs/r1/config.json", "runs/r1/metrics/windows.jsonl", "runs/r1/run_metadata.json"]
    lines = stored["runs/r1/metrics/windows.jsonl"].decode().splitlines()
    assert [json.loads(line)["window_id"] for line in lines] == list(range(6))  # the local layout, line for line
    assert list(local_cwd.iterdir()) == []


def test_a_remote_run_dir_is_never_reused_and_bad_locations_fail_in_one_line(s3, bucket, local_cwd):
    name, _ = bucket
    RunStore.create(root_uri(s3, name), "r1").write_config({})
    with pytest.raises(RunStoreError, match="already exists and is not empty"):
        RunStore.create(root_uri(s3, name), "r1")
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore.open(f"s3://{name}/runs/nope?endpoint_override={s3}&scheme=http")
    with pytest.raises(RunStoreError, match="no-such-bucket"):
        RunStore.create(root_uri(s3, "no-such-bucket"), "r1")
    with pytest.raises(RunStoreError, match="not a usable storage URI"):
        RunStore.create("nosuchscheme://x/runs", "r1")
    assert list(local_cwd.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*ignoring torn last line")
def test_torn_and_absent_objects(s3, bucket):
    """Nothing this trainer writes can be torn on S3 (whole objects), but an object copied in by
    hand or cut short can be: it is read as a torn file is read locally."""
    name, fs = bucket
    store = RunStore.create(root_uri(s3, name), "r1")
    with pytest.raises(RunStoreError, match=r"config\.json\S* is missing"):
        RunStore.open(str(store.run_dir))  # no config.json: not a run
    store.write_config({})
    for i in range(3):
        store.append_window(_row(i))
        store.save_checkpoint(i, {"window_id": i})
    key = f"{name}/runs/r1/metrics/windows.jsonl"
    with fs.open_output_stream(key) as f:
        f.write(fs.open_input_stream(key).read() + b'{"window_id": 3, "env_st')
    torn = RunStore.open(str(store.run_dir))
    with pytest.warns(UserWarning, match="torn last line"):
        assert [r["window_id"] for r in torn.read_windows()] == [0, 1, 2]
    with pytest.raises(RunStoreError, match="torn last line"), pytest.warns(UserWarning):
        torn.append_window(_row(3))
    ckpt = f"{name}/runs/r1/checkpoints/ckpt_000002.pt"
    whole = fs.open_input_stream(ckpt).read()
    with fs.open_output_stream(ckpt) as f:
        f.write(whole[: len(whole) // 2])
    with pytest.warns(UserWarning, match="skipping unusable checkpoint.*ckpt_000002.pt"):
        path, state, rows = torn.prepare_resume()
    assert path == "checkpoints/ckpt_000001.pt" and [r["window_id"] for r in rows] == [0, 1]
    assert fs.open_input_stream(ckpt).read() == whole[: len(whole) // 2]  # left for a person to look at
    torn.append_window(_row(2))
    assert torn.read_metadata() is None  # absent: the run died before writing it


def test_an_interrupted_write_leaves_the_old_object_whole(s3, bucket):
    """pyarrow's output stream commits what it holds when closed, so a write that fails halfway must
    never be closed: the old object stays, not an empty or partial one."""
    name, _ = bucket
    target = as_path(root_uri(s3, name)) / "run_metadata.json"
    atomic_write_bytes(target, b'{"status": "running"}')

    class Interrupted:  # the upload started, then the write was interrupted (a second Ctrl-C)
        def __init__(self, fs):
            self.fs = fs

        def open_output_stream(self, path):
            stream = self.fs.open_output_stream(path)

            class Stream:
                def write(self, data):
                    stream.write(b"{")
                    raise KeyboardInterrupt

                def close(self):
                    stream.close()
            return Stream()

    broken = RemotePath(Interrupted(target.fs), target.path, str(target).partition("?")[0], target.path)
    with pytest.raises(KeyboardInterrupt):
        broken.write_object(b'{"status": "completed"}')
    assert target.read_bytes() == b'{"status": "running"}'


def test_the_lease_holds_on_s3(s3, bucket):
    name, fs = bucket
    run_dir = as_path(root_uri(s3, name)) / "r1"
    first = RunLease(run_dir, settle_s=0.05).acquire()
    assert first.remote and json.loads((run_dir / LEASE_FILE).read_text())["token"] == first.token
    with pytest.raises(LeaseError, match="another driver is writing this run"):
        RunLease(str(run_dir), settle_s=0.05).acquire()
    first.release()
    assert not (run_dir / LEASE_FILE).exists()
    old = RunLease(run_dir, stale_s=60, heartbeat_s=3600, clock=lambda: 1000.0, settle_s=0.05).acquire()
    old.owner = "another-host:1"  # a driver on a machine that is gone
    atomic_write_bytes(run_dir / LEASE_FILE, json.dumps(old._record()).encode())
    new = RunLease(run_dir, stale_s=60, clock=lambda: 1061.0, settle_s=0.05).acquire()  # stale: taken over
    old.release()  # no longer the owner: leaves the new lease alone
    assert json.loads((run_dir / LEASE_FILE).read_text())["token"] == new.token
    new.release()


def test_plots_and_replays_of_a_remote_run(s3, bucket, local_cwd):
    from training.plots import load_windows, plot_learning_curves, plot_replay
    from training.replays import encode_frames

    name, fs = bucket
    store = RunStore.create(root_uri(s3, name), "r1")
    store.write_config({"env": "gym:CartPole-v1"})
    for i in range(3):
        store.append_window({**_row(i, float(i)), "sps": 10.0})
    assert len(load_windows(store.windows_path)) == 3
    out = plot_learning_curves(str(store.run_dir), reference_episodes=0)
    assert str(out).startswith(f"s3://{name}/runs/r1/plots/learning_curves.png")
    frames = [{"t": t, "dt": 1, "reward": 0.5} for t in range(3)]
    episode = {"replay_gz": encode_frames(frames), "return_total": 1.5, "steps": 3, "seed": 7}
    entry = publish_replay(store.run_dir, "r1", 2, episode, "checkpoints/ckpt_000002.pt", 300, "puffer_ppo", {})
    assert entry["replay_path"] == "replays/replay-000002-seed7.jsonl.gz"
    assert entry["checkpoint_path"] == "checkpoints/ckpt_000002.pt"
    png = plot_replay(str(store.run_dir / entry["replay_path"]))
    assert str(png).startswith(f"s3://{name}/runs/r1/replays/replay-000002-seed7.png")
    stored = objects(fs, name)
    assert stored["runs/r1/plots/learning_curves.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert stored["runs/r1/replays/replay-000002-seed7.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert stored["runs/r1/replays/replay-000002-seed7.jsonl.gz"] == encode_frames(frames)
    assert json.loads(stored["runs/r1/replay_index.json"])["entries"][0]["window_id"] == 2
    assert list(local_cwd.iterdir()) == []


def test_tensorboard_and_wandb_files_of_a_remote_run_stay_local(s3, bucket, tmp_path, monkeypatch):
    from types import SimpleNamespace

    from training.config_cli import resolve
    from training.sinks import WandbSink, run_sinks

    name, fs = bucket
    monkeypatch.setenv("PROSPECTOR_LOCAL_DIR", str(tmp_path / "local"))
    run_dir = as_path(root_uri(s3, name)) / "r1"
    sink, _ = run_sinks(resolve({"env": "gym:CartPole-v1", "tensorboard": True, "run_id": "r1"}), run_dir)
    sink.log_window({"window_id": 0, "env_steps_total": 10, "return_mean": 1.0})
    sink.finish()
    assert list((tmp_path / "local" / "r1" / "tensorboard").iterdir()) and objects(fs, name) == {}

    wandb = WandbSink("disabled", "p", "r1", {}, tmp_path / "local" / "r1")
    added = []

    class Artifact:
        def __init__(self, name, type, metadata):
            pass

        def add_file(self, path, name):
            added.append((name, Path(path).read_bytes()))

    wandb._wandb, wandb._run = SimpleNamespace(Artifact=Artifact), SimpleNamespace(log_artifact=lambda a, aliases: None)
    atomic_write_bytes(run_dir / "checkpoints" / "ckpt_000001.pt", b"ckpt")
    wandb.log_checkpoint(str(run_dir / "checkpoints" / "ckpt_000001.pt"), 1)  # as the recorder passes it
    assert added == [("ckpt_000001.pt", b"ckpt")]


@pytest.mark.slow
def test_train_resume_and_eval_on_s3_through_the_cli(s3, bucket, tmp_path):
    """The endpoint as a user sets it (AWS_ENDPOINT_URL), a plain s3:// run root; the CLI runs in an
    empty folder, which it must leave empty."""
    name, fs = bucket
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{s3}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def cli(*args):
        res = subprocess.run([sys.executable, "-m", "ray_app", *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=180)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout

    out = cli("train", "--env", "gym:CartPole-v1", "--total-env-steps", "2048", "--window-env-steps", "1024",
              "--ppo-num-envs", "2", "--ppo-num-workers", "1", "--run-root", f"s3://{name}/runs", "--run-id", "r1")
    run_uri = f"s3://{name}/runs/r1"
    assert "resume with" not in out and f"run directory {run_uri}" in out
    cli("train", "--resume", run_uri, "--total-env-steps", "4096", "--window-env-steps", "1024")
    store = RunStore.open(f"{run_uri}?endpoint_override={s3}&scheme=http")
    rows = store.read_windows()
    assert [r["window_id"] for r in rows] == [0, 1, 2, 3]
    assert [r["env_steps_total"] for r in rows] == [1024, 2048, 3072, 4096]
    assert all(r["env_steps_start"] == prev["env_steps_end"] for prev, r in zip(rows, rows[1:]))
    meta = store.read_metadata()
    assert meta["status"] == "completed" and len(meta["resumes"]) == 1 and meta["resumes"][0]["from_window"] == 1
    latest = meta["latest_checkpoint"]["path"]
    out = cli("eval", "--checkpoint", f"{run_uri}/{latest}", "--episodes", "2", "--no-baselines")
    assert "window 3, 4096 env steps" in out
    assert not any(k.endswith(".tmp") or ".tmp" in k.rsplit("/", 1)[-1] for k in objects(fs, name))
    assert not (RunStore.open(f"{run_uri}?endpoint_override={s3}&scheme=http").run_dir / LEASE_FILE).exists()
    assert list(cwd.iterdir()) == []  # no local "s3:" folder, no "runs"


@pytest.mark.slow
def test_a_sweep_on_s3_keeps_runs_experiment_and_best_config_there(s3, bucket, tmp_path):
    """Tune's experiment state, every trial's run and the best config on the store, from an empty
    local folder; --resume restores the experiment from the store."""
    name, fs = bucket
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{s3}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "s.toml").write_text(SWEEP.format(samples=1, steps=2048, window=1024, root=f"s3://{name}/runs"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    outs = []
    for resume in ([], ["--resume"]):
        res = subprocess.run([sys.executable, "-m", "ray_app", "sweep", "--config", str(tmp_path / "s.toml"), *resume],
                             cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        outs.append(res.stdout[res.stdout.index("| return_mean |"):])
    assert outs[0] == outs[1], "the restored sweep reports the same trials"
    rows = [line for line in outs[0].splitlines() if "ppo_learning_rate" in line]
    assert len(rows) == 2 and all(f"s3://{name}/runs/lr-" in row for row in rows), outs[0]
    stored = objects(fs, name)
    windows = [k for k in stored if k.startswith("runs/lr-") and k.endswith("metrics/windows.jsonl")]
    assert len(windows) == 2 and all(len(stored[k].splitlines()) == 2 for k in windows)
    assert any(k.startswith("runs/sweeps/lr/") and "experiment_state" in k for k in stored), sorted(stored)
    best = json.loads(stored["runs/sweeps/lr/best_config.json"])
    assert best["env"] == "gym:CartPole-v1" and best["ppo_learning_rate"] in (1e-6, 3e-3)
    assert f"prospector train --config s3://{name}/runs/sweeps/lr/best_config.json" in outs[0]
    from training.config_cli import load_config_file

    assert load_config_file(f"s3://{name}/runs/sweeps/lr/best_config.json?endpoint_override={s3}&scheme=http")[
        "ppo_learning_rate"] == best["ppo_learning_rate"], "the best config is a --config file read from the store"
    assert list(cwd.iterdir()) == []

import json
import os
import re
import subprocess

import numpy as np
import pytest
import torch

from training import run_store as rs
from training.checkpoints import CHECKPOINT_FORMAT_VERSION, CheckpointError, load_checkpoint
from training.run_metadata import (
    metadata_after_checkpoint, metadata_after_window, metadata_finished, metadata_resumed, new_metadata,
)
from training.run_store import RunStore, RunStoreError, default_run_id
from training.storage import atomic_write_bytes, atomic_write_json


def _row(i, steps=100, episodes=2):
    return {"run_id": "r", "window_id": i, "window_complete": True,
            "env_steps_start": i * steps, "env_steps_end": (i + 1) * steps,
            "env_steps_in_window": steps, "env_steps_total": (i + 1) * steps,
            "episodes_completed": episodes, "sps": 50.0 + i}


@pytest.fixture
def store(tmp_path):
    s = RunStore.create(tmp_path / "runs", "run-a")
    s.write_config({"seed": 0})
    return s


# -- atomic writes --------------------------------------------------------------------------------

def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"old")
    atomic_write_json(target, {"a": float("nan"), "b": np.float32(1.5), "c": np.int64(3)})
    assert json.loads(target.read_text()) == {"a": None, "b": 1.5, "c": 3}
    assert os.listdir(tmp_path) == ["f.json"]


def test_failed_replace_keeps_old_content_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "run_metadata.json"
    atomic_write_json(target, {"status": "running", "n": 1})
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(rs.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"status": "completed", "n": 2})
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["run_metadata.json"]


def test_failed_torch_save_keeps_old_checkpoint(tmp_path):
    store = RunStore.create(tmp_path, "r")
    target = store.run_dir / store.save_checkpoint(0, {"format_version": CHECKPOINT_FORMAT_VERSION, "w": torch.ones(2)})
    before = target.read_bytes()
    with pytest.raises(Exception):
        store.save_checkpoint(0, {"fn": lambda: 0})  # lambdas cannot be pickled
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["ckpt_000000.pt"]


# -- create / open / config / metadata --------------------------------------------------------

def test_create_makes_layout(tmp_path):
    s = RunStore.create(tmp_path / "runs", "r1")
    assert s.run_dir == tmp_path / "runs" / "r1" and s.run_id == "r1"
    for d in ("metrics", "checkpoints", "replays"):
        assert (s.run_dir / d).is_dir()
    assert s.windows_path == s.run_dir / "metrics" / "windows.jsonl"
    assert s.metadata_path.name == "run_metadata.json" and s.config_path.name == "config.json"


def test_create_refuses_existing_non_empty_run(store):
    with pytest.raises(RunStoreError, match=re.escape(str(store.run_dir))):
        RunStore.create(store.run_dir.parent, "run-a")
    assert json.loads(store.config_path.read_text()) == {"seed": 0}


def test_create_accepts_existing_empty_dir_and_rejects_bad_ids(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    RunStore.create(tmp_path / "runs", "empty")
    for bad in ("", "..", "a/b"):
        with pytest.raises(RunStoreError):
            RunStore.create(tmp_path / "runs", bad)


def test_open_requires_existing_run_with_config(tmp_path, store):
    with pytest.raises(RunStoreError, match="does not exist"):
        RunStore.open(tmp_path / "nope")
    (tmp_path / "bare").mkdir()
    with pytest.raises(RunStoreError, match="config.json"):
        RunStore.open(tmp_path / "bare")
    assert RunStore.open(store.run_dir).read_config() == {"seed": 0}


def test_write_config_refuses_overwrite(store):
    with pytest.raises(RunStoreError, match="written once"):
        store.write_config({"seed": 1})
    assert store.read_config() == {"seed": 0}


def test_metadata_round_trip(store):
    assert store.read_metadata() is None
    meta = new_metadata("run-a", "random", 1000, 100, {"num_env_runners": 2})
    store.write_metadata(meta)
    assert store.read_metadata() == meta


# -- windows.jsonl ----------------------------------------------------------------------------

def test_append_and_read_windows_compact_lines(store):
    for i in range(3):
        store.append_window(_row(i))
    lines = store.windows_path.read_text().splitlines()
    assert len(lines) == 3 and ", " not in lines[0]
    assert [r["window_id"] for r in store.read_windows()] == [0, 1, 2]


def test_append_rejects_duplicate_and_gap(store):
    store.append_window(_row(0))
    with pytest.raises(RunStoreError, match="does not follow"):
        store.append_window(_row(0))
    with pytest.raises(RunStoreError, match="does not follow"):
        store.append_window(_row(2))
    # a fresh store on the same dir learns the last id from the file
    with pytest.raises(RunStoreError):
        RunStore.open(store.run_dir).append_window(_row(0))


def test_truncate_windows_keeps_exactly_0_to_k(store):
    for i in range(6):
        store.append_window(_row(i))
    assert store.truncate_windows(3) == 2
    assert [r["window_id"] for r in store.read_windows()] == [0, 1, 2, 3]
    assert len(store.windows_path.read_text().splitlines()) == 4
    store.append_window(_row(4))  # resume continues with no gap ...
    with pytest.raises(RunStoreError):
        store.append_window(_row(4))  # ... and no duplicate
    assert store.truncate_windows(99) == 0
    assert store.truncate_windows(-1) == 5 and store.read_windows() == []
    assert [p.name for p in store.metrics_dir.iterdir()] == ["windows.jsonl"]


def test_torn_last_line_is_skipped_then_repaired(store):
    store.append_window(_row(0))
    with open(store.windows_path, "a") as f:
        f.write('{"run_id": "r", "wind')
    with pytest.warns(UserWarning, match="torn"):
        assert len(store.read_windows()) == 1
    fresh = RunStore.open(store.run_dir)
    with pytest.warns(UserWarning), pytest.raises(RunStoreError, match="torn"):
        fresh.append_window(_row(1))
    with pytest.warns(UserWarning):
        fresh.truncate_windows(0)
    fresh.append_window(_row(1))
    assert [r["window_id"] for r in fresh.read_windows()] == [0, 1]


# -- checkpoints ------------------------------------------------------------------------------

def test_save_and_load_checkpoint(store):
    rel = store.save_checkpoint(3, {"policy": {"w": torch.arange(3.0)}, "global_step": 300})
    assert rel == "checkpoints/ckpt_000003.pt"
    state = store.load_checkpoint(rel)
    assert state["format_version"] == CHECKPOINT_FORMAT_VERSION and state["window_id"] == 3
    assert torch.equal(state["policy"]["w"], torch.arange(3.0))
    assert store.list_checkpoints() == [store.run_dir / rel]


def test_latest_checkpoint_skips_corrupt_newest_without_touching_it(store):
    for i in range(2):
        store.save_checkpoint(i, {"global_step": i})
    bad = store.checkpoints_dir / "ckpt_000002.pt"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    stat = bad.stat()
    with pytest.warns(UserWarning, match="ckpt_000002.pt"):
        assert store.latest_checkpoint() == store.checkpoints_dir / "ckpt_000001.pt"
    assert bad.read_bytes() == b"\x00garbage\xff" * 10
    assert bad.stat().st_mtime_ns == stat.st_mtime_ns
    assert len(store.list_checkpoints()) == 3


def test_prepare_resume_truncates_to_loadable_checkpoint(store):
    for i in range(4):
        store.append_window(_row(i))
        if i < 3:
            store.save_checkpoint(i, {"global_step": (i + 1) * 100})
    (store.checkpoints_dir / "ckpt_000002.pt").write_bytes(b"partial")
    with pytest.warns(UserWarning):
        rel, state, rows = store.prepare_resume()
    assert rel == "checkpoints/ckpt_000001.pt" and state["global_step"] == 200
    assert [r["window_id"] for r in rows] == [0, 1]
    with pytest.warns(UserWarning, match="superseded"):
        store.save_checkpoint(2, {"global_step": 300})  # the broken file is kept aside
    assert len(list(store.checkpoints_dir.glob("ckpt_000002.pt.superseded-*"))) == 1
    assert store.latest_checkpoint().name == "ckpt_000002.pt"


def test_latest_checkpoint_none_when_empty(store):
    assert store.latest_checkpoint() is None
    assert store.prepare_resume() == (None, None, [])


@pytest.mark.parametrize("content, reason", [
    (None, "file not found"),
    (b"not a torch file", "corrupt or partial"),
    ("truncated", "corrupt or partial"),
    ({"policy": 1}, "missing format_version"),
    ({"format_version": 99}, "unknown format_version 99"),
    ([1, 2], "not a checkpoint"),
])
def test_load_checkpoint_errors_name_the_file(tmp_path, content, reason):
    path = tmp_path / "ckpt_000007.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)


def test_a_checkpoint_from_before_the_plugins_names_its_format_even_where_its_classes_moved(tmp_path, monkeypatch):
    """Format 1 files pickled the env's state under module paths that moved with the game
    (training.envs.prospector_sim -> prospector_game.sim): they cannot be unpickled any more, and
    must fail in one line naming their format, not as "corrupt"."""
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "moved_away.py").write_text("class Sim:\n    def __init__(self):\n        self.x = [1, 2]\n")
    import moved_away

    old = tmp_path / "old.pt"
    torch.save({"format_version": 1, "window_id": 3, "runners": [{"env": {"sim": moved_away.Sim()}}]}, old)
    (tmp_path / "moved_away.py").unlink()
    monkeypatch.delitem(sys.modules, "moved_away")
    loadable = tmp_path / "loadable.pt"
    torch.save({"format_version": 1, "window_id": 3}, loadable)
    for path in (old, loadable):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert message.startswith(f"{path}: format_version 1") and "\n" not in message, message


# -- metadata builders ------------------------------------------------------------------------

CONTRACT_FIELDS = {
    "run_id": str, "status": str, "trainer_backend": str, "target_env_steps": int,
    "window_env_steps": int, "env_steps_total": int, "episodes_total": int, "windows_emitted": int,
    "checkpoints_written": int, "metrics_windows_path": str, "checkpoints_dir": str,
    "replays_dir": str, "config_path": str, "started_at": str, "updated_at": str,
}
NULL_FIELDS = ("latest_window", "latest_checkpoint", "latest_replay", "replay_index_path",
               "wandb_run_url", "constellation_url", "finished_at")


def test_new_metadata_has_contract_fields():
    meta = new_metadata("r", "puffer_ppo", 1000, 100,
                        {"ray_address": "local", "num_env_runners": 4, "learner_device": "cpu"})
    for key, typ in CONTRACT_FIELDS.items():
        assert isinstance(meta[key], typ), key
    for key in NULL_FIELDS:
        assert key in meta and meta[key] is None, key
    assert meta["status"] == "running" and meta["env_steps_total"] == 0
    assert meta["metrics_windows_path"] == "metrics/windows.jsonl"
    assert (meta["checkpoints_dir"], meta["replays_dir"], meta["config_path"]) == (
        "checkpoints", "replays", "config.json")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["started_at"])
    assert meta["num_env_runners"] == 4 and "error" not in meta
    with pytest.raises(ValueError, match="status"):
        new_metadata("r", "random", 1, 1, {"status": "x"})


def test_metadata_after_window_and_checkpoint():
    meta = new_metadata("r", "random", 1000, 100)
    meta = metadata_after_window(meta, _row(0, episodes=3))
    meta = metadata_after_window(meta, _row(1, episodes=4))
    assert (meta["env_steps_total"], meta["episodes_total"], meta["windows_emitted"]) == (200, 7, 2)
    assert meta["latest_window"] == {
        "window_id": 1, "window_complete": True, "env_steps_start": 100, "env_steps_end": 200,
        "env_steps_in_window": 100, "env_steps_total": 200,
        "metrics_row_path": "metrics/windows.jsonl"}
    assert meta["last_window_sps"] == 51.0
    meta = metadata_after_checkpoint(meta, 1, 200, "checkpoints/ckpt_000001.pt")
    assert meta["checkpoints_written"] == 1
    assert set(meta["latest_checkpoint"]) == {"window_id", "env_steps_total", "path", "created_at"}
    assert meta["latest_checkpoint"]["path"] == "checkpoints/ckpt_000001.pt"
    json.dumps(meta, allow_nan=False)


def test_metadata_finished_and_resumed():
    meta = metadata_after_window(new_metadata("r", "random", 1000, 100), _row(0))
    failed = metadata_finished(meta, "failed", "ValueError: boom")
    assert failed["status"] == "failed" and failed["error"] == "ValueError: boom"
    assert failed["finished_at"] is not None and meta["finished_at"] is None  # input untouched
    assert "error" not in metadata_finished(meta, "completed")
    with pytest.raises(ValueError):
        metadata_finished(meta, "running")
    failed = metadata_after_window(failed, _row(1))  # written before the crash, past the ckpt
    resumed = metadata_resumed(failed, 0, "checkpoints/ckpt_000000.pt", windows=[_row(0)])
    assert resumed["status"] == "running" and resumed["finished_at"] is None
    assert "error" not in resumed
    assert resumed["resumes"][0]["from_window"] == 0
    assert resumed["resumes"][0]["checkpoint"] == "checkpoints/ckpt_000000.pt"
    assert set(resumed["resumes"][0]) == {"time", "from_window", "checkpoint"}
    assert (resumed["windows_emitted"], resumed["env_steps_total"], resumed["episodes_total"]) == (
        1, 100, 2)
    assert resumed["latest_checkpoint"]["window_id"] == 0
    assert resumed["latest_checkpoint"]["env_steps_total"] == 100
    again = metadata_resumed(resumed, 0, "checkpoints/ckpt_000000.pt")
    assert len(again["resumes"]) == 2


# -- run id -----------------------------------------------------------------------------------

def test_default_run_id_without_git(tmp_path):
    rid = default_run_id(cwd=tmp_path)
    assert re.fullmatch(r"\d{8}T\d{6}Z-nogit", rid)


def test_default_run_id_git_failure_is_nogit(monkeypatch):
    def hang(*a, **k):
        raise subprocess.TimeoutExpired("git", 3)

    monkeypatch.setattr(rs.subprocess, "run", hang)
    assert default_run_id().endswith("-nogit")


def test_default_run_id_with_git(tmp_path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q", str(tmp_path)], check=True)
    subprocess.run(git + ["-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"],
                   check=True)
    sha = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert default_run_id(cwd=tmp_path).endswith(f"-{sha}")


def test_prepare_resume_refuses_checkpoint_ahead_of_rows(store):
    store.append_window(_row(0))
    store.save_checkpoint(1, {"global_step": 200})  # row 1 was never written
    with pytest.raises(RunStoreError, match="gap"):
        store.prepare_resume()


def test_pruning_keeps_the_newest_and_the_best(store):
    """keep 2 of 6: windows 4 and 5 (newest) and window 1 (best return); an unscored window (None)
    is never the best; 0 keeps everything."""
    returns = [0.5, 3.0, None, 1.0, 2.0, 2.5]
    for i, ret in enumerate(returns):
        store.append_window({**_row(i), "return_mean": ret})
        store.save_checkpoint(i, {"window_id": i})
    assert store.prune_checkpoints(0) == []
    deleted = store.prune_checkpoints(2)
    assert sorted(p.name for p in deleted) == ["ckpt_000000.pt", "ckpt_000002.pt", "ckpt_000003.pt"]
    assert [p.name for p in store.list_checkpoints()] == ["ckpt_000001.pt", "ckpt_000004.pt", "ckpt_000005.pt"]
    assert store.prune_checkpoints(2) == []  # nothing more to do

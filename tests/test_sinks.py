import sys
import time
import types

import pytest

from training.run_store import RunStore
from training.sinks import JsonlWindowSink, MultiSink, WandbSink

ROW = {"run_id": "r", "window_id": 0, "window_complete": True, "env_steps_total": 120,
       "reward_mean": 0.5, "return_mean": None, "sps": 12.5}


class FakeWandb(types.ModuleType):
    """Records calls the way the sink makes them, so the W&B contract is checked without W&B."""

    def __init__(self, fail_log=False):
        super().__init__("wandb")
        self.calls = []
        self.fail_log = fail_log
        outer = self

        class Run:
            url = "https://wandb.example/r"

            def log(self, data, step=None):
                if outer.fail_log:
                    raise RuntimeError("network down")
                outer.calls.append(("log", data, step))

            def log_artifact(self, art, aliases=None):
                outer.calls.append(("artifact", art, aliases))

            def finish(self, exit_code=0):
                outer.calls.append(("finish", exit_code))

        class Artifact:
            def __init__(self, name, type, metadata=None):
                self.name, self.type, self.metadata, self.files = name, type, metadata, []

            def add_file(self, path, name=None):
                self.files.append((path, name))

        self.Artifact = Artifact
        self._Run = Run

    def init(self, **kwargs):
        self.calls.append(("init", kwargs))
        return self._Run()


@pytest.fixture
def fake_wandb(monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return fake


def test_jsonl_sink_appends_through_store(tmp_path):
    store = RunStore.create(tmp_path, "r")
    sink = JsonlWindowSink(store)
    sink.log_window(ROW)
    sink.log_window({**ROW, "window_id": 1})
    sink.log_checkpoint("checkpoints/ckpt_000001.pt", 1)
    sink.finish()
    assert [r["window_id"] for r in store.read_windows()] == [0, 1]


def test_disabled_is_a_no_op(tmp_path, fake_wandb):
    sink = WandbSink("disabled", "proj", "r", {"a": 1}, tmp_path)
    sink.log_window(ROW)
    sink.log_checkpoint(tmp_path / "x.pt", 0)
    sink.finish()
    assert sink.url is None and not sink.active and fake_wandb.calls == []
    with pytest.raises(ValueError, match="mode"):
        WandbSink("cloud", "proj", "r", {}, tmp_path)


def test_wandb_init_log_artifact_contract(tmp_path, fake_wandb):
    ckpt = tmp_path / "checkpoints" / "ckpt_000003.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    sink = WandbSink("online", "asteroid-prospector", "20260101T000000Z-abc", {"seed": 0}, tmp_path)
    init = fake_wandb.calls[0][1]
    assert init["project"] == "asteroid-prospector" and init["name"] == "20260101T000000Z-abc"
    assert init["id"] == "20260101T000000Z-abc" and init["config"] == {"seed": 0}
    assert init["mode"] == "online" and init["dir"] == str(tmp_path) and init["resume"] == "allow"
    assert sink.url == "https://wandb.example/r"
    sink.log_window(ROW)
    _, data, step = fake_wandb.calls[1]
    assert step == 120
    assert data == {"window_id": 0, "window_complete": 1, "env_steps_total": 120,
                    "reward_mean": 0.5, "sps": 12.5}
    sink.log_checkpoint("checkpoints/ckpt_000003.pt", 3)  # run-relative, as save_checkpoint gives
    _, art, aliases = fake_wandb.calls[2]
    assert art.name == "model-20260101T000000Z-abc" and art.type == "model"
    assert aliases == ["latest", "window-3"] and art.files == [(str(ckpt), "ckpt_000003.pt")]
    sink.finish(exit_code=1)
    sink.finish()
    assert fake_wandb.calls[3:] == [("finish", 1)]


def test_wandb_log_errors_do_not_stop_training(tmp_path, monkeypatch, caplog):
    fake = FakeWandb(fail_log=True)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    sink = WandbSink("offline", "p", "a/b:c", {}, tmp_path)
    assert fake.calls[0][1]["id"] == "a-b-c"  # W&B rejects / and : in ids
    assert sink.url is None  # offline runs have no URL
    sink.log_window(ROW)
    assert "network down" in caplog.text


def test_multisink_fans_out_and_finishes_all(tmp_path):
    seen = []

    class Rec:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def log_window(self, row):
            seen.append((self.name, "w", row["window_id"]))

        def log_checkpoint(self, path, window_id):
            seen.append((self.name, "c", window_id))

        def log_replay(self, path, window_id):
            seen.append((self.name, "r", window_id))

        def finish(self, exit_code=0):
            seen.append((self.name, "f", exit_code))
            if self.fail:
                raise RuntimeError("x")

    multi = MultiSink([Rec("a", fail=True), Rec("b")])
    multi.log_window(ROW)
    multi.log_checkpoint("p", 0)
    multi.log_replay("p", 0)
    with pytest.raises(RuntimeError):
        multi.finish(2)
    assert seen == [("a", "w", 0), ("b", "w", 0), ("a", "c", 0), ("b", "c", 0),
                    ("a", "r", 0), ("b", "r", 0), ("a", "f", 2), ("b", "f", 2)]


def test_offline_wandb_leaves_syncable_dir(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    start = time.monotonic()
    run_dir = tmp_path / "runs" / "r-offline"
    ckpt = run_dir / "checkpoints" / "ckpt_000000.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    sink = WandbSink("offline", "asteroid-prospector", "r-offline", {"seed": 0}, run_dir)
    try:
        sink.log_window(ROW)
        sink.log_checkpoint(ckpt, 0)
        assert sink.url is None
    finally:
        sink.finish()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-r-offline.wandb"))
    assert time.monotonic() - start < 30

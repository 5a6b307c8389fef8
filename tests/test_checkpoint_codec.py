"""Checkpoint encoding: large arrays go in as tensor records, come back as the same NumPy arrays,
and encoding no longer copies them several times over."""

import io
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint_codec import MIN_RECORD_BYTES, save_to_array
from prospector_game.env import ProspectorEnv
from training.checkpoints import CHECKPOINT_FORMAT_VERSION, CheckpointError, encode_checkpoint, load_checkpoint


def _load(arr: np.ndarray):
    return torch.load(io.BytesIO(arr.tobytes()), weights_only=False)


def test_arrays_come_back_identical_in_type_dtype_shape_and_sharing():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 300)).astype(np.float32)
    read_only = np.arange(40_000, dtype=np.int64)
    read_only.flags.writeable = False  # as the object store hands the runners' states over
    state = {
        "big": big, "again": big,  # one object twice: stays one object
        "read_only": read_only,
        "flags": rng.random(100_000) > 0.5,
        "u64": np.arange(20_000, dtype=np.uint64),  # no exact torch dtype: stays in-band
        "strided": big[:, ::2],  # not contiguous: stays in-band
        "small": np.ones(3, np.float64),
        "scalar": 7,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'array is not writable' warning either
        back = _load(save_to_array(state))
    assert back["scalar"] == 7
    for key in ("big", "read_only", "flags", "u64", "strided", "small"):
        assert type(back[key]) is np.ndarray, key
        assert back[key].dtype == state[key].dtype and back[key].shape == state[key].shape, key
        np.testing.assert_array_equal(back[key], state[key])
    assert back["again"] is back["big"]
    back["big"][0, 0] = 1.0  # a loaded checkpoint's arrays are ordinary, writable arrays
    back["read_only"][0] = 1


def test_large_arrays_are_archive_records_not_pickle_bytes():
    state = {"a": np.zeros(MIN_RECORD_BYTES // 4, np.float32), "b": np.zeros(10, np.float32)}
    with zipfile.ZipFile(io.BytesIO(save_to_array(state).tobytes())) as z:
        records = [n for n in z.namelist() if "/data/" in n]
        pickle_size = next(z.getinfo(n).file_size for n in z.namelist() if n.endswith("data.pkl"))
    assert len(records) == 1  # "a" only: "b" is below the threshold
    assert pickle_size < 1000


def test_encoding_an_env_state_peaks_near_the_output_size():
    """Plain torch.save of this state peaks at ~5x its size (pickle stream, its copy, the archive,
    each grown by reallocation); the codec at about the archive alone."""
    env = ProspectorEnv(num_envs=128, seed=3)
    env.reset(3)
    for _ in range(20):
        env.step(np.random.default_rng(1).integers(0, 69, 128))
    state = {"runners": [{"env": env.get_state()}], "learner": None}
    tracemalloc.start()
    try:
        encoded = encode_checkpoint(state)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert encoded.nbytes > 4 << 20
    assert peak < 1.8 * encoded.nbytes, (peak, encoded.nbytes)
    back = _load(encoded)["runners"][0]["env"]
    restored = ProspectorEnv(num_envs=128, seed=99)
    restored.set_state(back)
    actions = np.random.default_rng(2).integers(0, 69, 128)
    env.step(actions)
    restored.step(actions)
    np.testing.assert_array_equal(restored.observations, env.observations)


def test_checkpoints_written_by_plain_torch_save_still_load(tmp_path):
    path = tmp_path / "ckpt_000000.pt"
    arr = np.arange(50_000, dtype=np.float32)
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "arr": arr}, path)
    np.testing.assert_array_equal(load_checkpoint(path)["arr"], arr)


MARKER_NAME = "code-ran"


class Crafted:
    """What an attacker pickles: unpickling it calls Path.touch (it could call anything)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_pickle_in_a_checkpoint_does_not_run(tmp_path):
    """torch.save of an object whose unpickling runs a call: loading reports the file and names the
    global, and the call never happens: neither in the restricted load nor in the format peek."""
    marker = tmp_path / MARKER_NAME
    path = tmp_path / "ckpt_000000.pt"
    torch.save({"format_version": CHECKPOINT_FORMAT_VERSION, "payload": Crafted(marker)}, path)
    with pytest.raises(CheckpointError, match=r"names builtins.getattr, pathlib.Path.*may not load"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"format_version": 999, "payload": Crafted(marker)}, path)  # the peek reads the version
    with pytest.raises(CheckpointError, match="unknown format_version 999"):
        load_checkpoint(path)
    assert not marker.exists()


class Snapshot:
    """An env state object no plug-in declares."""


def test_an_env_state_a_checkpoint_could_not_load_fails_when_written():
    with pytest.raises(CheckpointError, match="Snapshot.*get_state.*checkpoint_types"):
        encode_checkpoint({"runners": [{"env": Snapshot()}], "learner": None})


def test_the_games_declared_snapshot_classes_load_back(tmp_path):
    env = ProspectorEnv(num_envs=4, seed=3)
    env.reset(3)
    path = tmp_path / "ckpt_000000.pt"
    path.write_bytes(encode_checkpoint({"runners": [{"env": env.get_state()}], "learner": None}).tobytes())
    restored = ProspectorEnv(num_envs=4, seed=99)
    restored.set_state(load_checkpoint(path)["runners"][0]["env"])
    np.testing.assert_array_equal(restored.observations, env.observations)

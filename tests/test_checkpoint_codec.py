"""Checkpoint encoding: large arrays go in as tensor records, come back as the same NumPy arrays,
and encoding no longer copies them several times over."""

import io
import tracemalloc
import warnings
import zipfile

import numpy as np
import torch

from training.checkpoint_codec import MIN_RECORD_BYTES, save_to_array
from prospector_game.env import ProspectorEnv
from training.run_store import CHECKPOINT_FORMAT_VERSION, encode_checkpoint, load_checkpoint


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

"""``torch.save`` into memory, with large NumPy arrays written the way tensors are.

``torch.save`` pickles a NumPy array in-band: its bytes are copied into the pickle stream, the
whole stream is copied again before it goes into the zip archive, and both grow by reallocation.
A checkpoint holds the runners' env states, often large arrays, so encoding one can take several
times its size in extra memory. Here each large array is pickled as a tensor over the same memory
(``torch.from_numpy``, no copy), which ``torch.save`` writes as its own archive record straight
from that memory, and rebuilt as a NumPy array when the file is loaded: the peak falls to the
output buffer (docs/BENCHMARKS.md, "Checkpoint encoding"). What a checkpoint holds when loaded is
unchanged (the same arrays, dtypes and shapes).
"""

from __future__ import annotations

import io
import pickle
import types
import warnings

import numpy as np

# Smaller arrays stay in-band: one archive record each would cost more than it saves.
MIN_RECORD_BYTES = 1 << 16
# Dtypes torch.from_numpy maps exactly (torch's unsigned types beyond uint8 are partial).
_TORCH_DTYPES = frozenset(np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.int16, np.int32,
                                               np.int64, np.float16, np.float32, np.float64))


def array_from_tensor(tensor) -> np.ndarray:
    """Unpickling side; the name is part of the file format (files name it), keep it."""
    return tensor.numpy()


class _ArrayAsTensorPickler(pickle.Pickler):
    def reducer_override(self, obj):
        if (type(obj) is np.ndarray and obj.nbytes >= MIN_RECORD_BYTES and obj.dtype in _TORCH_DTYPES
                and obj.flags.c_contiguous):
            import torch

            with warnings.catch_warnings():  # object-store views are read-only; this only reads them
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return array_from_tensor, (torch.from_numpy(obj),)
        return NotImplemented


# torch.save(pickle_module=...) takes a module and uses only its Pickler (subclassed to add tensor records).
_PICKLE_MODULE = types.ModuleType("checkpoint_pickle")
_PICKLE_MODULE.Pickler = _ArrayAsTensorPickler


def save_to_array(obj) -> np.ndarray:
    """``torch.save(obj)``'s file contents as a uint8 array over the encoder's own buffer."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=_PICKLE_MODULE)
    return np.frombuffer(buf.getbuffer(), dtype=np.uint8)


class _StandIn:
    """Any object whose class the code no longer has (a checkpoint written before a module moved):
    enough to unpickle the rest of the file, never to use."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        pass


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return _StandIn


_LENIENT_MODULE = types.ModuleType("lenient_checkpoint_pickle")
_LENIENT_MODULE.Unpickler = _LenientUnpickler


def peek_format_version(data: bytes):
    """A checkpoint's ``format_version`` when the file names classes this code no longer has (so
    it does not load), or None where even that cannot be read: the caller can then name the format
    instead of calling the file corrupt."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_LENIENT_MODULE)
    except Exception:  # noqa: BLE001 (truncated or garbage bytes: no version to tell)
        return None
    return state.get("format_version") if isinstance(state, dict) else None

"""``torch.save`` into memory, with large NumPy arrays written the way tensors are.

``torch.save`` pickles a NumPy array in-band: its bytes are copied into the pickle stream, the
whole stream is copied again before it goes into the zip archive, and both grow by reallocation.
A checkpoint holds the runners' env states, often large arrays, so encoding one can take several
times its size in extra memory. Here each large array is pickled as a tensor over the same memory
(``torch.from_numpy``, no copy), which ``torch.save`` writes as its own archive record straight
from that memory, and rebuilt as a NumPy array when the file is loaded: the peak falls to the
output buffer (docs/BENCHMARKS.md, "Checkpoint encoding"). What a checkpoint holds when loaded is
unchanged (the same arrays, dtypes and shapes).

Loading never runs a file's code: runs are shared (W&B artifacts, copied directories), so a
crafted ``.pt`` must not execute on the machine of whoever evaluates it. ``load_bytes`` uses
torch's restricted unpickler (``weights_only=True``), which builds tensors, containers and numbers
and nothing else but the few types allowed here: NumPy arrays and dtypes, this module's tensor
records, and the classes env plug-ins declare for their envs' snapshots
(``EnvPlugin.checkpoint_types``). ``unsafe_globals`` tells a writer what a file would need beyond them.
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


def _numpy_globals() -> list:
    """What a pickled NumPy array or dtype names: its rebuild function (taken from an array's own
    ``__reduce__``, a public path to it), ``ndarray``, ``dtype`` and the dtype classes (object
    arrays excepted: their items would be arbitrary objects)."""
    rebuild = np.zeros(1).__reduce__()[0]
    dtypes = [getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType") and name != "ObjectDType"]
    return [rebuild, np.ndarray, np.dtype, *dtypes]


def allowed_globals(extra_types=()) -> list:
    """Everything a checkpoint may name: NumPy's arrays, this module's tensor records, ``extra_types``."""
    return [*_numpy_globals(), array_from_tensor, *extra_types]


def _qualname(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def unsafe_globals(data, extra_types=()) -> list[str]:
    """The globals a ``torch.save`` file (bytes, or a seekable binary file) names beyond
    ``allowed_globals``: empty when ``load_bytes`` can load it."""
    import torch

    allowed = {_qualname(g) for g in allowed_globals(extra_types)}
    names = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data) if isinstance(data, bytes) else data)
    # NumPy's private module path for the rebuild function differs between versions
    return sorted(n for n in names if n not in allowed and n.replace("numpy.core.", "numpy._core.") not in allowed)


def load_bytes(data: bytes, extra_types=()):
    """A checkpoint's contents, by torch's restricted unpickler: no code from the file runs."""
    import torch

    with torch.serialization.safe_globals(allowed_globals(extra_types)):
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class UnsafeCheckpointError(ValueError):
    """What a checkpoint would hold cannot be loaded back (``unsafe_globals``)."""


def save_to_array(obj, extra_types=()) -> np.ndarray:
    """``torch.save(obj)``'s file contents as a uint8 array over the encoder's own buffer. Raises
    ``UnsafeCheckpointError`` naming what ``load_bytes`` would refuse (checked on that same buffer)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=_PICKLE_MODULE)
    buf.seek(0)
    unsafe = unsafe_globals(buf, extra_types)
    if unsafe:
        raise UnsafeCheckpointError(", ".join(unsafe))
    return np.frombuffer(buf.getbuffer(), dtype=np.uint8)


class _StandIn:
    """Every object the file names a class or function for: enough to unpickle the rest of the file
    (its ``format_version``, a plain int), never to use, and never running the file's code."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):  # a stand-in for a function a stand-in returned (getattr(cls, name))
        return _StandIn()


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _StandIn


_LENIENT_MODULE = types.ModuleType("lenient_checkpoint_pickle")
_LENIENT_MODULE.Unpickler = _LenientUnpickler


def peek_format_version(data: bytes):
    """A checkpoint's ``format_version`` when the file does not load (it names classes this code no
    longer has, or may not load), or None where even that cannot be read: the caller can then name
    the format instead of calling the file corrupt. Every global the file names is a ``_StandIn``,
    so nothing of the file runs here either."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=_LENIENT_MODULE)
    except Exception:  # noqa: BLE001 (truncated or garbage bytes: no version to tell)
        return None
    return state.get("format_version") if isinstance(state, dict) else None

"""A checkpoint file: the format version it declares, how the learner encodes one
(``encode_checkpoint``: the driver only writes the bytes) and how any reader loads one
(``load_checkpoint``: a local path or a URI), and the one-line errors that name the file.

The run directory that holds checkpoints, and which one a resume takes, are training/run_store.py's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.checkpoint_codec import (UnsafeCheckpointError, load_bytes, peek_format_version, save_to_array,
                                       unsafe_globals)
from training.envs.plugin import checkpoint_types
from training.storage import RemotePath, as_path

# 2: the policy spec names a plug-in factory and its kwargs (training/agent.py); 1 held the
# trainer's own architecture fields, which no longer build a policy.
CHECKPOINT_FORMAT_VERSION = 2


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be used; the message starts with the file's path."""


class CheckpointFormatError(CheckpointError):
    """A whole checkpoint in a format this trainer does not read."""


def encode_checkpoint(state: dict, window_id: int | None = None) -> np.ndarray:
    """A checkpoint's file contents (``torch.save`` format), as a uint8 array over the encoder's own
    buffer. The learner actor calls this, so the driver, which only writes the bytes, needs no torch.
    An array rather than ``bytes``: Ray moves it out of band, so the driver writes the object store's
    copy as it is, and neither side holds a second copy of a checkpoint (tens of MB with the envs'
    state) at its peak; large arrays are written as tensor records (``training.checkpoint_codec``)."""
    payload = dict(state)
    version = payload.setdefault("format_version", CHECKPOINT_FORMAT_VERSION)
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(f"checkpoint format_version {version!r} != {CHECKPOINT_FORMAT_VERSION}")
    if window_id is not None:
        payload.setdefault("window_id", int(window_id))
    try:
        return save_to_array(payload, checkpoint_types())
    except UnsafeCheckpointError as e:  # fail at the first checkpoint, not at the resume that cannot load it
        raise CheckpointError(
            f"a checkpoint would hold objects of {e}, which checkpoints do not load (they never run a file's code): "
            "make the env's get_state() return plain data (dicts, lists, numbers, strings, NumPy arrays), or declare "
            "those classes in its plug-in's checkpoint_types (docs/EXTENDING.md)") from None


def load_checkpoint(path: str | os.PathLike | RemotePath) -> dict:
    """Load a checkpoint onto the CPU; raise ``CheckpointError("<path>: <reason>")`` if unusable.
    ``path``: a local path, a URI (``s3://...``) or a RemotePath."""
    path = as_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc
    try:
        state = load_bytes(data, checkpoint_types())  # torch's restricted unpickler: no code of the file runs
    except Exception as exc:  # torch raises many types for truncated/garbage input
        _check_version(path, peek_format_version(data))  # an older format names classes since moved
        try:
            unsafe = unsafe_globals(data, checkpoint_types())
        except Exception:  # noqa: BLE001 - not even a torch file: corrupt
            unsafe = []
        if unsafe:
            raise CheckpointError(f"{path}: names {', '.join(unsafe)}, which a checkpoint may not load (loading never "
                                  "runs a file's code; a crafted file could); an env plug-in declares the classes of "
                                  "its env snapshots in checkpoint_types") from None
        raise CheckpointError(
            f"{path}: corrupt or partial checkpoint ({type(exc).__name__}: {str(exc)[:300]})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds {type(state).__name__}, not dict)")
    if "format_version" not in state:
        raise CheckpointError(f"{path}: missing format_version key")
    _check_version(path, state["format_version"])
    return state



def _check_version(path: Path | RemotePath, version) -> None:
    if version == 1:
        raise CheckpointFormatError(f"{path}: format_version 1, from before policies and envs became plug-ins; this "
                              f"trainer reads {CHECKPOINT_FORMAT_VERSION} (retrain, or use a trainer from before them)")
    if version is not None and version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointFormatError(f"{path}: unknown format_version {version!r} (this trainer reads "
                              f"{CHECKPOINT_FORMAT_VERSION})")

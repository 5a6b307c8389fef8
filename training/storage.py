"""Where a run's files live: a local folder, or a folder of any filesystem ``pyarrow.fs`` knows,
named by a URI (``s3://bucket/runs``, ``gs://bucket/runs``, ...), as Ray Train's ``storage_path``.

``as_path(x)`` turns a ``--run-root`` / ``--resume`` / ``--checkpoint`` argument into a
``pathlib.Path`` (plain paths and ``file://`` URIs: everything local works exactly as before) or a
``RemotePath``, the part of ``Path``'s interface the run's modules use, on a pyarrow filesystem.
``str(RemotePath)`` is its URI again, with the query it was given (``?endpoint_override=...``), so a
printed ``--resume`` / ``--checkpoint`` works from any node. A ``RemotePath`` has no ``__fspath__``:
code that still wraps it in ``Path(...)`` fails loudly instead of writing into a local ``s3:`` folder.

Atomicity on an object store (docs/RUN_ARTIFACTS.md, section 2): there is no rename (a "move" is a
copy and a delete), but an object is replaced whole: ``write_object`` hands the whole content to
one output stream and closes it once, and the object appears (or replaces the old one) only when
that upload completes (S3 PutObject / CompleteMultipartUpload, a GCS upload's finalisation). A
writer that dies before the end leaves the old object, never a part of the new one.

Credentials and endpoints come from the filesystem's usual sources (for S3: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, ~/.aws, an instance profile) or from
the URI's query (``s3://bucket/runs?endpoint_override=host:9000&scheme=http``); never a secret in
the URI itself, which would be written into config.json and printed.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import json
import math
import os
import re
import secrets
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import numpy as np

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ABANDONED: list = []


def _abandon(stream) -> None:
    """Never close ``stream``, not even at exit: pyarrow offers no abort, and closing an output
    stream (its destructor does) commits what it holds, a partial object in place of a whole one."""
    _ABANDONED.append(stream)
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(stream))  # outlives the list's teardown at exit


class StorageError(OSError):
    """A URI that names no usable filesystem (unknown scheme, a secret in it, unreachable)."""


def is_uri(x: Any) -> bool:
    """True for ``scheme://...`` strings (``file://`` included); False for paths and Path objects."""
    return isinstance(x, str) and bool(_URI_RE.match(x))


def is_remote(x: Any) -> bool:
    """True when ``x`` names a location off the local disk (a RemotePath or a non-file URI)."""
    return isinstance(x, RemotePath) or (is_uri(x) and not x.lower().startswith("file://"))


def as_path(x: Any) -> "Path | RemotePath":
    """``x`` as a Path (local paths, ``file://`` URIs) or a RemotePath (any other URI)."""
    if isinstance(x, (Path, RemotePath)):
        return x
    if isinstance(x, str) and is_uri(x):
        if x.lower().startswith("file://"):
            return Path(url2pathname(unquote(urlsplit(x).path)))
        return RemotePath.from_uri(x)
    return Path(x)


def join(root: Any, *parts: str) -> "Path | RemotePath":
    """``as_path(root) / parts...``: a run directory from ``--run-root`` and a run id."""
    return as_path(root).joinpath(*parts)


class RemotePath:
    """A file or folder on a pyarrow filesystem other than the local disk."""

    __slots__ = ("fs", "path", "_root_uri", "_root_path", "_query", "_type")

    def __init__(self, fs, path: str, root_uri: str, root_path: str, query: str = "", file_type=None):
        self.fs, self.path = fs, path.rstrip("/")
        self._root_uri, self._root_path, self._query = root_uri, root_path, query
        self._type = file_type  # pyarrow FileType from the listing that found it, if any

    @classmethod
    def from_uri(cls, uri: str) -> "RemotePath":
        parts = urlsplit(uri)
        if parts.password:
            raise StorageError(f"{parts.scheme}://...: a secret in the URI would be written into config.json and "
                               "printed; pass credentials as the filesystem expects them (for S3: AWS_ACCESS_KEY_ID "
                               "and AWS_SECRET_ACCESS_KEY, ~/.aws, an instance profile)")
        import pyarrow.fs as pafs

        try:
            fs, path = pafs.FileSystem.from_uri(uri)
        except Exception as exc:  # ArrowInvalid (unknown scheme), OSError (unreachable)
            raise StorageError(f"{uri}: not a usable storage URI ({exc})") from None
        base, _, query = uri.partition("?")
        return cls(fs, path, base.rstrip("/"), path.rstrip("/"), query)

    def _child(self, path: str, file_type=None) -> "RemotePath":
        return RemotePath(self.fs, path, self._root_uri, self._root_path, self._query, file_type)

    # -- names --------------------------------------------------------------------------------
    def __str__(self) -> str:
        if self.path == self._root_path or self.path.startswith(self._root_path + "/"):
            uri = self._root_uri + self.path[len(self._root_path):]
        else:  # above the URI it came from: the scheme and the filesystem's path
            uri = f"{self._root_uri.split('://', 1)[0]}://{self.path}"
        return f"{uri}?{self._query}" if self._query else uri

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part) -> "RemotePath":
        return self.joinpath(part)

    def joinpath(self, *parts) -> "RemotePath":
        path = self.path
        for part in parts:
            part = str(part).strip("/")
            if part and part != ".":
                path = f"{path}/{part}"
        return self._child(path)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "RemotePath":
        return self._child(self.path.rsplit("/", 1)[0]) if "/" in self.path else self

    def with_name(self, name: str) -> "RemotePath":
        return self.parent / name

    def is_absolute(self) -> bool:
        return True

    def as_posix(self) -> str:
        return str(self)

    # -- queries ------------------------------------------------------------------------------
    def _file_type(self):
        return self._type if self._type is not None else self.fs.get_file_info(self.path).type

    def exists(self) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_type() == pafs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs as pafs

        return self._file_type() == pafs.FileType.Directory

    def iterdir(self) -> Iterator["RemotePath"]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return iter([self._child(info.path, info.type) for info in infos])

    def read_bytes(self) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        with self.fs.open_input_stream(self.path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    # -- changes ------------------------------------------------------------------------------
    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        # An object store has no folders; this checks the bucket exists (and leaves a marker).
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.delete_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        self._type = None

    def write_object(self, data) -> None:
        """Replace the object with ``data`` (bytes, memoryview, a uint8 array) in one upload: readers
        see the old object or the new one, whole. An interrupted write leaves the old object."""
        import pyarrow as pa

        data = pa.py_buffer(data)  # not a buffer: TypeError here, before any upload starts
        stream = self.fs.open_output_stream(self.path)
        try:
            stream.write(data)
        except BaseException:
            _abandon(stream)
            raise
        stream.close()
        self._type = None

    def replace(self, target: "RemotePath") -> None:
        """Move to ``target`` (a copy and a delete on an object store: not atomic, loses nothing)."""
        self.fs.move(self.path, target.path)
        self._type = None


def replace(src, dst) -> None:
    """``os.replace`` for local paths; a move on a remote filesystem."""
    if isinstance(src, RemotePath):
        src.replace(dst)
    else:
        os.replace(src, dst)


def local_dir_for(run_dir, run_id: str) -> Path:
    """The local folder for files only a local disk can take (TensorBoard's event files, W&B's
    offline files): the run directory itself, or for a remote run ``$PROSPECTOR_LOCAL_DIR/<run id>``
    (default ``<temp dir>/prospector-runs/<run id>``)."""
    if not isinstance(run_dir, RemotePath):
        return Path(run_dir)
    root = os.environ.get("PROSPECTOR_LOCAL_DIR") or os.path.join(tempfile.gettempdir(), "prospector-runs")
    return Path(root) / run_id


def call_with_local_copy(fn: Callable[[Any], Any], path) -> Any:
    """``fn(path)``; for a remote file, ``fn`` gets a temporary local copy (a missing object: a
    local path that does not exist either), and an exception naming the copy names the URI."""
    p = as_path(path)
    if not isinstance(p, RemotePath):
        return fn(path)
    with tempfile.TemporaryDirectory(prefix="prospector-") as d:
        local = Path(d) / p.name
        with contextlib.suppress(FileNotFoundError):
            local.write_bytes(p.read_bytes())
        try:
            return fn(local)
        except Exception as exc:
            if exc.args and isinstance(exc.args[0], str) and str(local) in exc.args[0]:
                exc.args = (exc.args[0].replace(str(local), str(p)), *exc.args[1:])
            raise


# ------------------------------------------------------------ atomic writes and JSON
def utc_now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def json_safe(value: Any) -> Any:
    """Numpy/torch scalars to Python numbers, NaN/inf to None (strict JSON has neither)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if callable(getattr(value, "tolist", None)):  # numpy / torch scalars and arrays
        return json_safe(value.tolist())
    raise TypeError(f"value of type {type(value).__name__} is not JSON-serialisable: {value!r}")


def _fsync_dir(directory: Path) -> None:
    # Without this the rename itself may be lost on power failure; some platforms cannot open dirs.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Temp files of the writes under way in this process, named before they exist: a process that
# leaves with os._exit (a second Ctrl-C) deletes them first, wherever in a write it stopped.
_partial_writes: set[str] = set()


def discard_partial_writes() -> None:
    """Delete the temp files of this process's unfinished atomic writes (from any thread), so a
    process about to ``os._exit`` leaves only whole files behind. The targets are untouched."""
    for tmp in list(_partial_writes):  # a copy: another thread may finish its write meanwhile
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target so os.replace is a rename within one filesystem (atomic).
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp")
    _partial_writes.add(tmp)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        _partial_writes.discard(tmp)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike | RemotePath, data: bytes | memoryview | np.ndarray) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new file, whole. A
    remote path (a URI, a RemotePath) is written as one object in one upload (training/storage.py)."""
    target = as_path(path)
    if isinstance(target, RemotePath):
        target.write_object(data)
        return
    _atomic_write(target, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))

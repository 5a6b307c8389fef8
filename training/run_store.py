"""On-disk layout of one training run (``runs/<run_id>/``) and the helpers that keep it consistent.

The API and web front end read these files while training writes them, and a crashed run must
resume without duplicating or losing windows, so every whole-file write is atomic and every
append is fsynced. See docs/RUN_ARTIFACTS.md for the contract this module implements.

The run root may also be a URI (``s3://bucket/runs``; training/storage.py): the layout is the
same, whole files are replaced as whole objects, and ``windows.jsonl`` is rewritten whole on each
append (an object store has no append) from the writer's in-memory copy.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np

from training.checkpoints import CheckpointError, encode_checkpoint, load_checkpoint
from training.storage import (RemotePath, StorageError, as_path, atomic_write_bytes, atomic_write_json, is_remote,
                              json_safe)
from training.storage import replace as move_file

_CKPT_RE = re.compile(r"^ckpt_(\d{6,})\.pt$")


class RunStoreError(RuntimeError):
    """The run directory is missing, clashes with another run, or holds inconsistent files."""


def default_run_id(now: _dt.datetime | None = None, cwd: str | os.PathLike | None = None) -> str:
    """``<UTC yyyymmddTHHMMSSZ>-<git short sha or "nogit">``, the first version's run id."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    stamp = now.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    sha = "nogit"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=3, check=False)
        candidate = out.stdout.strip()
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{4,40}", candidate):
            sha = candidate
    except (OSError, subprocess.SubprocessError):
        pass
    return f"{stamp}-{sha}"


def _run_path(*parts: str) -> property:
    return property(lambda self: self._run_dir.joinpath(*parts))


class RunStore:
    """Paths and reads/writes for one run directory. Single writer: the training driver."""

    def __init__(self, run_dir: str | os.PathLike | RemotePath):
        # Use create()/open(); the constructor does no checks so both share it.
        self._run_dir = as_path(run_dir)
        self._last_window_id: int | None = None  # cached for the continuity check in append_window
        self._torn_tail = False
        self._windows_data: bytes | None = None  # remote: windows.jsonl as this writer last wrote it

    @property
    def remote(self) -> bool:
        """True when the run lives on a remote filesystem (an object store), not the local disk."""
        return isinstance(self._run_dir, RemotePath)

    @classmethod
    def create(cls, run_root: str | os.PathLike, run_id: str) -> "RunStore":
        """Create ``<run_root>/<run_id>/`` and its sub-folders; never reuse another run's."""
        if not run_id or run_id in (".", "..") or "/" in run_id or "\\" in run_id:
            raise RunStoreError(f"invalid run id {run_id!r}: it must be a single folder name")
        with _storage_errors(run_root):
            run_dir = as_path(run_root) / run_id
            if run_dir.exists():
                if not run_dir.is_dir():
                    raise RunStoreError(f"run directory {run_dir} exists and is not a directory")
                if any(run_dir.iterdir()):
                    raise RunStoreError(
                        f"run directory {run_dir} already exists and is not empty; a new run never "
                        f"overwrites another: choose another --run-id or resume that run"
                    )
            return cls(run_dir)._make_dirs()

    @classmethod
    def open(cls, run_dir: str | os.PathLike) -> "RunStore":
        """Open an existing run (for resume); it must hold the config.json written at its start.
        ``run_dir``: a path, or a URI (``s3://bucket/runs/<run id>``)."""
        with _storage_errors(run_dir):
            run_dir = as_path(run_dir)
            if not run_dir.is_dir():
                raise RunStoreError(f"cannot resume: run directory {run_dir} does not exist")
            store = cls(run_dir)
            if not store.config_path.is_file():
                raise RunStoreError(f"cannot resume: {store.config_path} is missing; "
                                    f"{run_dir} is not a run")
            return store._make_dirs()

    def _make_dirs(self) -> "RunStore":
        for d in (self.metrics_dir, self.checkpoints_dir, self.replays_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def discard(self) -> None:
        """Delete this run's directory: for a new run that never began (its settings failed where
        only the actors could judge them), so no half-made run is left to resume."""
        shutil.rmtree(self._run_dir, ignore_errors=True)

    # -- paths (all derived from run_dir) -----------------------------------------------------
    run_dir = property(lambda self: self._run_dir)
    run_id = property(lambda self: self._run_dir.name)
    config_path = _run_path("config.json")
    metadata_path = _run_path("run_metadata.json")
    metrics_dir = _run_path("metrics")
    windows_path = _run_path("metrics", "windows.jsonl")
    checkpoints_dir = _run_path("checkpoints")
    replays_dir = _run_path("replays")
    replay_index_path = _run_path("replay_index.json")

    def relative(self, path: str | os.PathLike) -> str:
        """Run-relative POSIX path, the form stored in run_metadata.json."""
        if self.remote or is_remote(path):
            if not is_remote(path):
                return Path(path).as_posix()  # already run-relative
            text, root = str(path).partition("?")[0], str(self._run_dir).partition("?")[0] + "/"
            return text[len(root):] if text.startswith(root) else str(path)
        p = Path(path)
        try:
            if p.is_absolute():
                p = p.relative_to(self._run_dir.absolute())
            elif p.parts[: len(self._run_dir.parts)] == self._run_dir.parts:
                p = p.relative_to(self._run_dir)
        except ValueError:
            pass  # outside the run dir: keep as given
        return p.as_posix()

    def checkpoint_path(self, window_id: int) -> Path | RemotePath:
        return self.checkpoints_dir / f"ckpt_{int(window_id):06d}.pt"

    # -- config / metadata ---------------------------------------------------------------------
    def write_config(self, cfg: dict) -> None:
        # Written once: a resumed run records its resume in run_metadata instead of rewriting it.
        if self.config_path.exists():
            raise RunStoreError(f"{self.config_path} already exists; config.json is written once")
        atomic_write_json(self.config_path, cfg)

    def read_config(self) -> dict:
        return self._read_json(self.config_path)

    def write_metadata(self, meta: dict) -> None:
        atomic_write_json(self.metadata_path, meta)

    def read_metadata(self) -> dict | None:
        """The metadata dict, or None when the run died before writing it."""
        if not self.metadata_path.exists():
            return None
        return self._read_json(self.metadata_path)

    @staticmethod
    def _read_json(path: Path | RemotePath) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunStoreError(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise RunStoreError(f"{path}: cannot read JSON ({exc})") from exc

    # -- windows.jsonl -------------------------------------------------------------------------
    def append_window(self, row: dict) -> None:
        """Append one row (fsynced); its window_id must follow the file's last (no dup, no gap)."""
        window_id = int(row["window_id"])
        if self._last_window_id is None:
            rows = self.read_windows()
            if self._torn_tail:
                # Appending would glue the new row onto the fragment and corrupt both.
                raise RunStoreError(
                    f"{self.windows_path}: torn last line; call truncate_windows() first")
            self._last_window_id = int(rows[-1]["window_id"]) if rows else -1
        if window_id != self._last_window_id + 1:
            raise RunStoreError(
                f"{self.windows_path}: window_id {window_id} does not follow "
                f"{self._last_window_id}; truncate_windows() before resuming"
            )
        line = json.dumps(json_safe(row), separators=(",", ":"), allow_nan=False) + "\n"
        if self.remote:  # no append on an object store: the whole object again, from our copy of it
            data = self._windows_data if self._windows_data is not None else self._read_windows_bytes()
            if data and not data.endswith(b"\n"):
                data += b"\n"
            data += line.encode("utf-8")
            atomic_write_bytes(self.windows_path, data)
            self._windows_data = data
            self._last_window_id = window_id
            return
        self.metrics_dir.mkdir(parents=True, exist_ok=True)
        with open(self.windows_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._last_window_id = window_id

    def _read_windows_bytes(self) -> bytes:
        try:
            return self.windows_path.read_bytes()
        except FileNotFoundError:
            return b""

    def _read_window_lines(self) -> list[tuple[str, dict]]:
        self._torn_tail = False
        try:
            if self._windows_data is not None:  # remote writer: what it wrote last is the object
                lines = self._windows_data.decode("utf-8").splitlines()
            else:
                lines = self.windows_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append((line, json.loads(line)))
            except ValueError:
                # A crash mid-append can tear only the last line; anything else is real corruption.
                if i == len(lines) - 1:
                    self._torn_tail = True
                    warnings.warn(f"{self.windows_path}: ignoring torn last line {i + 1}",
                                  stacklevel=3)
                    continue
                raise RunStoreError(
                    f"{self.windows_path}: line {i + 1} is not valid JSON") from None
        return out

    def read_windows(self) -> list[dict]:
        return [row for _, row in self._read_window_lines()]

    def truncate_windows(self, after_window_id: int) -> int:
        """Keep rows with window_id <= after_window_id (atomic rewrite); return how many dropped."""
        entries = self._read_window_lines()
        kept = [(line, row) for line, row in entries if int(row["window_id"]) <= after_window_id]
        ids = [int(row["window_id"]) for _, row in kept]
        if ids != list(range(len(ids))):
            raise RunStoreError(f"{self.windows_path}: window ids are not 0..{len(ids) - 1}: {ids}")
        if self.windows_path.exists():
            data = "".join(line + "\n" for line, _ in kept).encode("utf-8")
            atomic_write_bytes(self.windows_path, data)
            if self.remote:
                self._windows_data = data
        self._last_window_id = ids[-1] if ids else -1
        return len(entries) - len(kept)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, window_id: int, state: dict | bytes | np.ndarray) -> str:
        """Write ``checkpoints/ckpt_<window_id:06d>.pt`` atomically; return its run-relative path.
        ``state`` is the checkpoint dict, or its encoding from ``encode_checkpoint``.

        An existing file for the same window (only possible after resuming past an unloadable
        one) is renamed aside, not deleted, so no bytes a person may want to inspect are lost.
        """
        data = encode_checkpoint(state, window_id) if isinstance(state, dict) else state
        path = self.checkpoint_path(window_id)
        if path.exists():
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
            aside = path.with_name(f"{path.name}.superseded-{stamp}")
            move_file(path, aside)
            warnings.warn(f"{path}: already existed; kept the old file as {aside.name}",
                          stacklevel=2)
        atomic_write_bytes(path, data)
        return self.relative(path)

    def list_checkpoints(self) -> list[Path | RemotePath]:
        """Checkpoint files by ascending window id (loadable or not)."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for p in self.checkpoints_dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m and p.is_file():
                found.append((int(m.group(1)), p))
        return [p for _, p in sorted(found)]

    def prune_checkpoints(self, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` checkpoints and the one written at the window of the best
        ``return_mean`` (the earliest of equals); 0 keeps all. Call it once the newest is written:
        files are written atomically, so the newest is whole before anything older goes. Returns
        the deleted paths. Files that do not load count like any other (the newest ``keep`` stand
        in for them)."""
        checkpoints = self.list_checkpoints()
        if keep <= 0 or len(checkpoints) <= keep:
            return []
        window_of = {p: int(_CKPT_RE.match(p.name).group(1)) for p in checkpoints}
        returns = {int(r["window_id"]): r.get("return_mean") for r in self.read_windows()}
        scored = [p for p in checkpoints if isinstance(returns.get(window_of[p]), (int, float))]
        best = max(scored, key=lambda p: (returns[window_of[p]], -window_of[p])) if scored else None
        doomed = [p for p in checkpoints[:-keep] if p != best]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def latest_checkpoint_state(self) -> tuple[Path, dict] | None:
        """(path, state) of the newest checkpoint that loads; unloadable newer files are skipped."""
        for path in reversed(self.list_checkpoints()):
            try:
                return path, load_checkpoint(path)
            except CheckpointError as exc:
                warnings.warn(f"skipping unusable checkpoint: {exc}", stacklevel=2)
        return None

    def latest_checkpoint(self) -> Path | None:
        found = self.latest_checkpoint_state()
        return found[0] if found else None

    def prepare_resume(self) -> tuple[str | None, dict | None, list[dict]]:
        """Find the newest loadable checkpoint and cut windows.jsonl back to its window.

        Returns (run-relative checkpoint path, its state, kept rows 0..window_id); with no
        loadable checkpoint, (None, None, []) after dropping every row: training restarts
        from step 0 in the same run directory.
        """
        found = self.latest_checkpoint_state()
        if found is None:
            self.truncate_windows(-1)
            return None, None, []
        path, state = found
        window_id = int(_CKPT_RE.match(path.name).group(1))
        self.truncate_windows(window_id)
        rows = self.read_windows()
        if len(rows) != window_id + 1:
            # The driver must append a window's row before saving that window's checkpoint.
            raise RunStoreError(f"{self.windows_path}: holds {len(rows)} rows but {path.name} "
                                f"is for window {window_id}; cannot resume without a gap")
        return self.relative(path), state, rows

    def load_checkpoint(self, path: str | os.PathLike) -> dict:
        """Like load_checkpoint(); a relative path is run-relative when that file exists."""
        p = as_path(path)
        if not p.is_absolute() and (self._run_dir / p).exists():
            p = self._run_dir / p
        return load_checkpoint(p)


@contextlib.contextmanager
def _storage_errors(where):
    """A remote location that cannot be used (bad URI, missing bucket, no credentials) as a one-line
    RunStoreError naming it; local errors pass unchanged."""
    try:
        yield
    except StorageError as exc:
        raise RunStoreError(str(exc)) from None
    except OSError as exc:
        if not is_remote(where):
            raise
        raise RunStoreError(f"{where}: cannot use this storage ({exc})") from None



"""Where window rows and checkpoints go besides the run store: windows.jsonl, Weights & Biases,
TensorBoard.

Every sink has the same four methods (log_window, log_checkpoint, log_replay, finish) so the
driver can hold a list or a MultiSink and not care which are enabled.
"""

from __future__ import annotations

import logging
import netrc
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from training.config import ConfigError
from training.run_store import RunStore
from training.storage import RemotePath, as_path, call_with_local_copy, is_remote, local_dir_for

log = logging.getLogger(__name__)

WANDB_MODES = ("disabled", "offline", "online")


def _wandb_name(run_id: str) -> str:
    # W&B run ids and artifact names reject characters like / : # ? % that a --run-id may hold.
    return re.sub(r"[^A-Za-z0-9_.-]", "-", run_id)[:128]


def _numeric_fields(row: dict) -> dict[str, float | int]:
    """The row's numbers (bools as 0/1); strings and None have no place on a W&B chart."""
    out: dict[str, float | int] = {}
    for key, value in row.items():
        if isinstance(value, bool):
            out[key] = int(value)
        elif isinstance(value, (int, float)):
            out[key] = value
    return out


class JsonlWindowSink:
    """Appends each window row to ``metrics/windows.jsonl`` through the run store (fsynced)."""

    def __init__(self, store: RunStore) -> None:
        self.store = store

    def log_window(self, row: dict) -> None:
        self.store.append_window(row)

    def log_checkpoint(self, path: str | os.PathLike, window_id: int) -> None:
        pass  # the checkpoint is already in the run directory

    def log_replay(self, path: str | os.PathLike, window_id: int) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbSink:
    """One W&B run per training run: name and id = run_id, config = the resolved config.

    ``disabled`` never imports wandb. ``offline`` needs no network and leaves
    ``<run_dir>/wandb/offline-run-*`` for a later ``wandb sync``. Logging errors after start-up
    are reported and swallowed: losing a chart point must not kill a long training run, while a
    failing ``wandb.init`` (bad credentials, no network in online mode) raises at start.

    Rows are logged with ``step=env_steps_total``. W&B ignores steps lower than one it already
    has, so after a crash-resume the re-played windows keep their first-logged values on W&B.
    """

    def __init__(self, mode: str, project: str, run_id: str, config: dict | None,
                 run_dir: str | os.PathLike, *, entity: str | None = None, group: str | None = None,
                 tags: list[str] | None = None) -> None:
        if mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {mode!r}")
        self.mode = mode
        self.run_id = run_id
        self._name = _wandb_name(run_id)
        self._run: Any = None
        self._wandb: Any = None
        self._run_dir = Path(run_dir)
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb  # lazy: a second or more of import time that disabled runs should not pay

        self._wandb = wandb
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(project=project, entity=entity, group=group, tags=tags or None, name=run_id,
                               id=self._name, config=dict(config or {}), mode=mode, dir=str(run_dir),
                               resume="allow")

    @property
    def active(self) -> bool:
        return self._run is not None

    @property
    def url(self) -> str | None:
        """The run's web URL when online (for run_metadata.wandb_run_url), else None."""
        if self.mode != "online" or self._run is None:
            return None
        return getattr(self._run, "url", None)

    def _guard(self, what: str, fn: Callable[[], None]) -> None:
        if self._run is None:
            return
        try:
            fn()
        except Exception as exc:  # any wandb failure: report, keep training
            log.warning("W&B %s failed (%s: %s); continuing without it",
                        what, type(exc).__name__, exc)

    def log_window(self, row: dict) -> None:
        step = int(row["env_steps_total"])
        self._guard("log_window", lambda: self._run.log(_numeric_fields(row), step=step))

    def _log_file(self, kind: str, path: str | os.PathLike, aliases: list[str],
                  metadata: dict) -> None:
        file = as_path(path)
        if not isinstance(file, RemotePath) and not file.is_absolute() and not file.exists():
            file = self._run_dir / file  # run-relative, as save_checkpoint returns it

        def upload() -> None:
            art = self._wandb.Artifact(f"{kind}-{self._name}",
                                       type="model" if kind == "model" else kind,
                                       metadata={"run_id": self.run_id, **metadata})
            # a remote run's file (s3://...) from a local copy; add_file copies it into W&B's staging area
            call_with_local_copy(lambda local: art.add_file(str(local), name=file.name), file)
            self._run.log_artifact(art, aliases=aliases)

        self._guard(f"{kind} artifact", upload)

    def log_checkpoint(self, path: str | os.PathLike, window_id: int) -> None:
        """Artifact ``model-<run_id>`` with aliases ``latest`` and ``window-<id>``."""
        self._log_file("model", path, ["latest", f"window-{int(window_id)}"],
                       {"window_id": int(window_id)})

    def log_replay(self, path: str | os.PathLike, window_id: int) -> None:
        """Artifact ``replay-<run_id>`` with aliases ``latest`` and ``window-<id>``."""
        self._log_file("replay", path, ["latest", f"window-{int(window_id)}"],
                       {"window_id": int(window_id)})

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run (idempotent); a non-zero exit_code marks it failed on W&B."""
        run, self._run = self._run, None
        if run is not None:
            try:
                run.finish(exit_code=exit_code)
            except Exception as exc:
                log.warning("W&B finish failed (%s: %s)", type(exc).__name__, exc)


class TensorBoardSink:
    """Every window row's numbers as TensorBoard scalars, at step ``env_steps_total``, in
    ``<run_dir>/tensorboard`` (``tensorboard --logdir runs`` shows every run). tensorboardX writes
    the event files; it imports torch when torch is installed, so a driver with --tensorboard
    loads torch (the only setting under which it does)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(Path(run_dir) / "tensorboard"), flush_secs=30)

    def log_window(self, row: dict) -> None:
        step = int(row["env_steps_total"])
        for key, value in _numeric_fields(row).items():
            if key not in ("window_id", "env_steps_total"):
                self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def log_checkpoint(self, path: str | os.PathLike, window_id: int) -> None:
        pass

    def log_replay(self, path: str | os.PathLike, window_id: int) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        self._writer.close()


class MultiSink:
    """Fans every call out to several sinks; finish() reaches all of them even if one fails."""

    def __init__(self, sinks: Iterable[Any]) -> None:
        self.sinks = list(sinks)

    def log_window(self, row: dict) -> None:
        for sink in self.sinks:
            sink.log_window(row)

    def log_checkpoint(self, path: str | os.PathLike, window_id: int) -> None:
        for sink in self.sinks:
            sink.log_checkpoint(path, window_id)

    def log_replay(self, path: str | os.PathLike, window_id: int) -> None:
        for sink in self.sinks:
            sink.log_replay(path, window_id)

    def finish(self, exit_code: int = 0) -> None:
        errors = []
        for sink in self.sinks:
            try:
                sink.finish(exit_code)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def run_sinks(cfg, run_dir: str | os.PathLike | RemotePath) -> tuple[MultiSink, str | None]:
    """The sinks a run's settings ask for (W&B in its mode, TensorBoard with --tensorboard), as one
    MultiSink, and the W&B run's URL when online. Both write local files: a remote run's
    (``s3://...``) go to a local folder (``training.storage.local_dir_for``), named on stdout."""
    tags = [t.strip() for t in (cfg.wandb_tags or "").split(",") if t.strip()]
    if is_remote(run_dir):
        run_dir = local_dir_for(as_path(run_dir), cfg.run_id)
        if cfg.tensorboard or cfg.wandb_mode != "disabled":
            print(f"TensorBoard / W&B files of this run (its run directory is remote): {run_dir}", flush=True)
    wandb = WandbSink(cfg.wandb_mode, cfg.wandb_project, cfg.run_id, cfg.to_dict(), str(run_dir),
                      entity=cfg.wandb_entity, group=cfg.wandb_group, tags=tags)
    sinks = [wandb, TensorBoardSink(run_dir)] if cfg.tensorboard else [wandb]
    return MultiSink(sinks), wandb.url


def check_wandb_credentials(mode: str) -> None:
    """``--wandb-mode online`` needs an API key (``WANDB_API_KEY``, or ``wandb login``'s entry in
    ~/.netrc): without one, refuse before anything starts, instead of failing a started run."""
    if mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    host = re.sub(r"^https?://", "", os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).split("/")[0]
    try:
        found = netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        found = False
    if not found:
        raise ConfigError("--wandb-mode", f"online needs a W&B API key: set WANDB_API_KEY or run `wandb login` "
                                          f"(no key for {host} in ~/.netrc); or log with --wandb-mode offline")

"""run_metadata.json builders: pure functions returning a new dict, so a failed write leaves the
caller's previous dict intact. RunStore writes what they return (atomically)."""

from __future__ import annotations

import copy
from typing import Any

from training.storage import utc_now_iso

_FINAL_STATUSES = ("completed", "failed", "stopped")

_LATEST_WINDOW_KEYS = ("window_id", "window_complete", "env_steps_start", "env_steps_end",
                       "env_steps_in_window", "env_steps_total")


def new_metadata(run_id: str, trainer_backend: str, target_env_steps: int, window_env_steps: int,
                 extra: dict | None = None) -> dict:
    now = utc_now_iso()
    meta: dict[str, Any] = {
        "run_id": run_id, "status": "running", "trainer_backend": trainer_backend,
        "target_env_steps": int(target_env_steps), "window_env_steps": int(window_env_steps),
        "env_steps_total": 0, "episodes_total": 0, "windows_emitted": 0, "checkpoints_written": 0,
        "latest_window": None, "latest_checkpoint": None, "latest_replay": None,
        "replay_index_path": None, "metrics_windows_path": "metrics/windows.jsonl",
        "checkpoints_dir": "checkpoints", "replays_dir": "replays", "config_path": "config.json",
        "wandb_run_url": None, "constellation_url": None,
        "started_at": now, "updated_at": now, "finished_at": None, "last_window_sps": None,
    }
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata keys {clash} clash with contract fields")
    meta.update(copy.deepcopy(extra or {}))
    return meta


def _latest_window(row: dict) -> dict:
    out = {k: row.get(k) for k in _LATEST_WINDOW_KEYS}
    out["metrics_row_path"] = "metrics/windows.jsonl"
    return out


def metadata_after_window(meta: dict, window_row: dict) -> dict:
    out = copy.deepcopy(meta)
    out["env_steps_total"] = int(window_row["env_steps_total"])
    out["episodes_total"] = (int(out.get("episodes_total") or 0)
                             + int(window_row.get("episodes_completed") or 0))
    out["windows_emitted"] = int(out.get("windows_emitted", 0)) + 1
    out["latest_window"] = _latest_window(window_row)
    out["last_window_sps"] = window_row.get("sps")
    out["updated_at"] = utc_now_iso()
    return out


def metadata_after_checkpoint(meta: dict, window_id: int, env_steps_total: int, path: str) -> dict:
    out = copy.deepcopy(meta)
    now = utc_now_iso()
    out["checkpoints_written"] = int(out.get("checkpoints_written", 0)) + 1
    out["latest_checkpoint"] = {"window_id": int(window_id),
                                "env_steps_total": int(env_steps_total),
                                "path": str(path), "created_at": now}
    out["updated_at"] = now
    return out


def metadata_finished(meta: dict, status: str, error: str | None = None) -> dict:
    if status not in _FINAL_STATUSES:
        raise ValueError(f"final status must be one of {_FINAL_STATUSES}, got {status!r}")
    out = copy.deepcopy(meta)
    now = utc_now_iso()
    out.update(status=status, finished_at=now, updated_at=now)
    out.pop("error", None)
    if status == "failed" or error is not None:
        out["error"] = error or "UnknownError: run failed"
    return out


def metadata_resumed(meta: dict, from_window_id: int, from_checkpoint: str | None, *,
                     windows: list[dict] | None = None) -> dict:
    """Record a resume; with ``windows`` (rows kept by truncate_windows) also roll back counters.

    The crashed process may have written metadata for windows past its last loadable checkpoint,
    so the kept rows, not the old counters, are the truth about what the run has produced.
    """
    out = copy.deepcopy(meta)
    now = utc_now_iso()
    out.setdefault("resumes", []).append(
        {"time": now, "from_window": int(from_window_id), "checkpoint": from_checkpoint})
    out.update(status="running", finished_at=None, updated_at=now)
    out.pop("error", None)
    if windows is not None:
        last = windows[-1] if windows else None
        out["windows_emitted"] = len(windows)
        out["episodes_total"] = sum(int(r.get("episodes_completed") or 0) for r in windows)
        out["env_steps_total"] = int(last["env_steps_total"]) if last else 0
        out["latest_window"] = _latest_window(last) if last else None
        out["last_window_sps"] = last.get("sps") if last else None
    latest = out.get("latest_checkpoint")
    if from_checkpoint is None:
        out["latest_checkpoint"] = None
    elif not latest or latest.get("path") != from_checkpoint:
        # The crash came between writing this checkpoint and recording it.
        steps = next((r["env_steps_total"] for r in windows or []
                      if r["window_id"] == from_window_id), None)
        out["latest_checkpoint"] = {"window_id": int(from_window_id), "env_steps_total": steps,
                                    "path": from_checkpoint, "created_at": now}
    return out

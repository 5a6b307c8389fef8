"""``replay_index.json`` (docs/RUN_ARTIFACTS.md, "Replays"): its entries and their tags
(every_window, best_so_far, milestones), and publishing a window's best evaluation episode:
replay file first, then its index entry, so an entry never points at a missing file."""

from __future__ import annotations

import json

from training.replays import SCHEMA_VERSION, eval_seeds, pack_episode, record_best, write_replay
from training.storage import atomic_write_json, utc_now_iso
from training.storage import as_path

ENTRY_KEYS = ("run_id", "window_id", "replay_id", "replay_path", "checkpoint_path", "tags",
              "trainer_backend", "return_total", "steps", "profit", "survival", "terminated",
              "truncated", "checkpoint_env_steps_total", "created_at")
MILESTONE_METRICS = {"profit": "profit", "return": "return_total", "survival": "survival"}


def parse_thresholds(text) -> list[tuple[str, float]]:
    """"100,500,1000" -> [("100", 100.0), ...]. Labels keep the user's spelling ("1.0" stays
    "1.0") so tags read like the flag; numbers given directly are written with %g."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text) if isinstance(text, (list, tuple)) else [text]
    out = []
    for item in items:
        if isinstance(item, tuple):  # already parsed
            out.append((str(item[0]), float(item[1])))
        elif not isinstance(item, str):
            out.append((format(float(item), "g"), float(item)))
        elif item.strip():
            try:
                out.append((item.strip(), float(item)))
            except ValueError:
                raise ValueError(f"milestone threshold {item.strip()!r} is not a number") from None
    return out


def _getter(cfg):
    return cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))


def thresholds_from_config(cfg) -> dict:
    """{metric: [(label, value)]} from a TrainConfig or its dict (the three --eval-milestone-* flags)."""
    get = _getter(cfg)
    return {m: parse_thresholds(get(f"eval_milestone_{m}_thresholds")) for m in MILESTONE_METRICS}


class ReplayIndex:
    """``replay_index.json`` of one run; every add() rewrites it whole and atomically."""

    def __init__(self, run_dir, run_id: str):
        self.path = as_path(run_dir) / "replay_index.json"  # local, or on a remote store (s3://...)
        self.run_id = run_id
        self.entries: list[dict] = []
        if self.path.exists():
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION or not isinstance(data.get("entries"), list):
                raise ValueError(f"{self.path}: not a schema_version 1 replay index")
            if data.get("run_id") not in (None, run_id):
                raise ValueError(f"{self.path}: belongs to run {data.get('run_id')!r}, not {run_id!r}")
            self.entries = data["entries"]

    @property
    def latest(self) -> dict | None:
        return self.entries[-1] if self.entries else None

    def add(self, entry_fields: dict, thresholds: dict | None = None) -> dict:
        """Append an entry with its tags and save. ``thresholds``: {"profit"|"return"|"survival":
        flag string or list}. A resumed run replays windows after its checkpoint, so entries of
        this window id or later are dropped first: no window is listed twice."""
        wid = int(entry_fields["window_id"])
        self.entries = [e for e in self.entries if int(e["window_id"]) < wid]
        entry = {k: entry_fields.get(k) for k in ENTRY_KEYS}
        entry.update({k: v for k, v in entry_fields.items() if k not in entry})
        entry["run_id"] = entry_fields.get("run_id") or self.run_id
        entry["created_at"] = entry_fields.get("created_at") or utc_now_iso()
        tags = ["every_window"]
        ret = entry.get("return_total")
        earlier = [e.get("return_total") for e in self.entries if e.get("return_total") is not None]
        if ret is not None and all(ret > r for r in earlier):
            tags.append("best_so_far")
        for metric, items in (thresholds or {}).items():
            key = MILESTONE_METRICS[metric]
            value = entry.get(key)
            if value is None:
                continue
            for label, x in parse_thresholds(items):
                reached_before = any(e.get(key) is not None and e[key] >= x for e in self.entries)
                if value >= x and not reached_before:
                    tags.append(f"milestone:{metric}:{label}")
        entry["tags"] = tags
        self.entries.append(entry)
        self.save()
        return entry

    def save(self) -> None:
        atomic_write_json(self.path, {"schema_version": SCHEMA_VERSION, "run_id": self.run_id,
                                      "updated_at": utc_now_iso(), "entries": self.entries})


def publish_replay(run_dir, run_id: str, window_id: int, episode: dict, checkpoint_path: str,
                   checkpoint_env_steps_total: int, trainer_backend: str, thresholds: dict,
                   replay_id: str | None = None) -> dict:
    """Write the episode's replay file (frames or packed), then its index entry: in that order,
    so an entry never points at a missing file. -> the entry (run_metadata.latest_replay)."""
    from training.run_store import RunStore

    replay_id = replay_id or f"seed{episode.get('seed', 0)}"
    rel = write_replay(run_dir, window_id, replay_id, episode)
    fields = {k: episode.get(k) for k in ("return_total", "steps", "profit", "survival",
                                          "terminated", "truncated", "seed")}
    fields.update(run_id=run_id, window_id=int(window_id), replay_id=replay_id, replay_path=rel,
                  checkpoint_path=RunStore(run_dir).relative(checkpoint_path),
                  trainer_backend=trainer_backend, checkpoint_env_steps_total=int(checkpoint_env_steps_total))
    return ReplayIndex(run_dir, run_id).add(fields, thresholds)


def best_window_episode(cfg, window_id: int, policy, pack: bool = True) -> dict | None:
    """The replay part that needs compute (a Ray task's job): --eval-replays-per-window episodes
    on the contract's seeds, the best one returned (packed by default). None when replays are off."""
    get = _getter(cfg)
    n = int(get("eval_replays_per_window", 0) or 0)
    if n <= 0:
        return None
    seeds = eval_seeds(get("seed", 0), get("eval_seed_offset", 100_000), window_id, n)
    best, _ = record_best(policy, get("env"), seeds, get("env_rules"), get("env_time_max"),
                          bool(get("eval_policy_deterministic", True)), get("eval_max_steps_per_episode"),
                          get("env_kwargs"))
    return pack_episode(best) if pack else best


def window_replay(run_dir, run_id: str, cfg, window_id: int, policy, checkpoint_path: str,
                  checkpoint_env_steps_total: int) -> dict | None:
    """Both parts in one call: record the window's best episode, write it and index it."""
    ep = best_window_episode(cfg, window_id, policy)
    if ep is None:
        return None
    return publish_replay(run_dir, run_id, window_id, ep, checkpoint_path, checkpoint_env_steps_total,
                          _getter(cfg)("trainer_backend", "puffer_ppo"), thresholds_from_config(cfg))

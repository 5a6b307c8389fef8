"""Evaluation replays: record one episode frame by frame and write it as gzipped JSON lines
(docs/RUN_ARTIFACTS.md, "Replays"); training/replay_index.py keeps the index.

Frame k is the k-th decision, read as a transition: ``t`` (time elapsed before the decision),
``render_state`` (the world as the agent saw it when deciding, observation included) and
``action`` describe the moment of the decision; ``dt``, ``reward``, ``terminated``, ``truncated``
and ``events`` are what the step did. So t[k+1] == t[k] + dt[k]. Any env's episode can be recorded
with its observations only (``t`` counts decisions); an env's plug-in may record richer frames
(its ``record_replay`` tool hook: the prospector's carry the game's state and ticks).

Ray-free: the trainer may call record_best in a Ray task and replay_index.publish_replay (file
writes) where the run directory lives.
"""

from __future__ import annotations

import gzip
import json
import re

import numpy as np

from training.storage import atomic_write_bytes, json_safe
from training.storage import as_path

SCHEMA_VERSION = 1
EVENTS = ("invalid_action", "pirate_encounter", "overheat_tick", "terminated", "truncated")
FRAME_KEYS = ("schema_version", "frame_index", "t", "dt", "action", "reward", "terminated",
              "truncated", "render_state", "events")
_REPLAY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# ------------------------------------------------------------------------------ recording
def obs_list(obs) -> list:
    # 5 decimals: observations are float32 in [-1, 1]; full float64 reprs would triple the file.
    return np.round(np.asarray(obs, np.float64).ravel(), 5).tolist()


def _action_json(a):
    a = np.asarray(a)
    return a.item() if a.size == 1 and a.ndim <= 1 else a.tolist()


def _record_vecenv(act, env_spec: str, seed: int, rules, time_max, max_steps, kwargs) -> dict:
    from training.envs.registry import make_vecenv

    env = make_vecenv(env_spec, 1, seed, rules=rules, time_max=time_max, kwargs=kwargs, vector_backend="serial")
    obs, _ = env.reset(seed=seed)
    frames, cut, done = [], False, False
    while not done:
        if max_steps is not None and len(frames) >= max_steps:
            cut = True
            break
        a = act(obs)
        o = obs_list(obs[0])
        obs, rew, term, trunc, _ = env.step(a)
        term, trunc = bool(np.asarray(term)[0]), bool(np.asarray(trunc)[0])
        trunc = trunc and not term
        done = term or trunc
        k = len(frames)
        frames.append({"schema_version": SCHEMA_VERSION, "frame_index": k, "t": k, "dt": 1,
                       "action": _action_json(np.asarray(a)[0]), "reward": float(np.asarray(rew)[0]),
                       "terminated": term, "truncated": trunc, "render_state": {"observation": o},
                       "events": [n for n, hit in (("terminated", term), ("truncated", trunc)) if hit]})
    env.close()
    return episode_record(frames, cut, profit=None, survival=None, ticks=len(frames))


def episode_record(frames: list, cut: bool, profit, survival, ticks) -> dict:
    if cut and frames:  # stopped by max_steps: the file must still say where and why it ends
        f = frames[-1]
        f["truncated"] = True
        f["events"] = [e for e in f["events"] if e != "truncated"] + ["truncated"]
        f.setdefault("info", {})["cut_by_max_steps"] = True
    last = frames[-1] if frames else {"terminated": False, "truncated": cut}
    return {"frames": frames, "return_total": float(sum(f["reward"] for f in frames)),
            "steps": len(frames), "profit": profit, "survival": survival, "ticks": ticks,
            "terminated": bool(last["terminated"]), "truncated": bool(last["truncated"]) or cut,
            "cut_by_max_steps": cut}


def record_episode(policy, env_spec: str, seed: int, rules: str | None = None, time_max: int | None = None,
                   deterministic: bool = True, max_steps: int | None = None, kwargs: dict | None = None) -> dict:
    """Play one episode on ``seed`` and record every decision. ``policy``: a training.agent.Agent,
    or None for uniform random actions (random backend); ``kwargs``: the env's ``--env-kwargs``.
    -> dict(frames, return_total, steps, profit, survival, terminated, truncated, ticks,
    cut_by_max_steps, seed, env)."""
    from training.envs.plugin import tool
    from training.envs.registry import make_vecenv
    from training.evaluate import make_act_fn, single_thread  # torch: only where episodes are played

    probe = make_vecenv(env_spec, 1, int(seed), rules=rules, time_max=time_max, kwargs=kwargs)
    act = make_act_fn(policy, probe.single_action_space, deterministic, seed)
    probe.close()
    record = tool(env_spec, "record_replay")
    with single_thread():
        if record is not None:
            ep = record(act, int(seed), rules=rules, time_max=time_max, max_steps=max_steps)
        else:
            ep = _record_vecenv(act, env_spec, int(seed), rules, time_max, max_steps, kwargs)
    ep.update(seed=int(seed), env=env_spec)
    return ep


def episode_summary(ep: dict) -> dict:
    return {k: ep.get(k) for k in ("seed", "return_total", "steps", "profit", "survival",
                                   "terminated", "truncated", "ticks")}


def record_best(policy, env_spec: str, seeds, rules: str | None = None, time_max: int | None = None,
                deterministic: bool = True, max_steps: int | None = None,
                kwargs: dict | None = None) -> tuple[dict, list[dict]]:
    """Play one episode per seed; keep only the best by return (the first on ties), so memory
    holds at most two episodes' frames. -> (best episode, summaries of all, in seed order)."""
    best, summaries = None, []
    for s in seeds:
        ep = record_episode(policy, env_spec, s, rules, time_max, deterministic, max_steps, kwargs)
        summaries.append(episode_summary(ep))
        if best is None or ep["return_total"] > best["return_total"]:
            best = ep
    if best is None:
        raise ValueError("record_best needs at least one seed")
    return best, summaries


def eval_seeds(seed: int, eval_seed_offset: int, window_id: int, n: int) -> list[int]:
    """The contract's seeds for a window's replays: seed + offset + window_id*1000 + i."""
    return [int(seed) + int(eval_seed_offset) + int(window_id) * 1000 + i for i in range(int(n))]


# ------------------------------------------------------------------------------ files
def _frame_line(frame: dict) -> str:
    try:
        return json.dumps(frame, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # numpy scalars or a NaN from a user env: sanitise (slow path)
        return json.dumps(json_safe(frame), separators=(",", ":"), allow_nan=False)


def encode_frames(frames: list) -> bytes:
    """The replay file's bytes. mtime=0: the same episode always gives the same bytes."""
    text = "".join(_frame_line(f) + "\n" for f in frames)
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def pack_episode(ep: dict) -> dict:
    """The episode with its frames already encoded (``replay_gz`` bytes): a long prospector
    episode is millions of Python floats as lists, ~1-2 MB as gzip; ship this from a Ray task."""
    out = {k: v for k, v in ep.items() if k != "frames"}
    out["replay_gz"] = encode_frames(ep["frames"])
    return out


def replay_relpath(window_id: int, replay_id: str) -> str:
    if not _REPLAY_ID_RE.match(str(replay_id)):
        raise ValueError(f"replay_id {replay_id!r} must match {_REPLAY_ID_RE.pattern}")
    return f"replays/replay-{int(window_id):06d}-{replay_id}.jsonl.gz"


def write_replay(store_or_run_dir, window_id: int, replay_id: str, episode: dict) -> str:
    """Write the episode (frames, or packed) atomically; -> the run-relative path."""
    run_dir = as_path(getattr(store_or_run_dir, "run_dir", store_or_run_dir))  # a local Path, or a RemotePath
    rel = replay_relpath(window_id, replay_id)
    data = episode.get("replay_gz") or encode_frames(episode["frames"])
    atomic_write_bytes(run_dir / rel, data)
    return rel


def read_replay(path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)


def validate_replay(path) -> list[str]:
    """Problems with a replay file against the schema (empty list: valid)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        return [f"{path}: unreadable gzip ({type(exc).__name__}: {exc})"]
    if not lines:
        return [f"{path}: no frames"]
    problems, prev = [], None
    for n, line in enumerate(lines):
        try:
            fr = json.loads(line)
        except json.JSONDecodeError as exc:
            fr = exc
        if not isinstance(fr, dict):
            problems.append(f"line {n + 1}: not a JSON object ({fr})")
            continue
        rs, events = fr.get("render_state"), fr.get("events")
        checks = (
            ([k for k in FRAME_KEYS if k not in fr], f"missing keys {[k for k in FRAME_KEYS if k not in fr]}"),
            (fr.get("schema_version") != SCHEMA_VERSION, f"schema_version {fr.get('schema_version')!r}, expected 1"),
            (fr.get("frame_index") != n, f"frame_index {fr.get('frame_index')!r}, expected {n}"),
            (not _is_num(fr.get("dt")) or fr["dt"] <= 0, f"dt must be > 0, got {fr.get('dt')!r}"),
            (not (_is_num(fr.get("t")) and _is_num(fr.get("reward"))), "t and reward must be finite numbers"),
            (prev is not None and _is_num(fr.get("t")) and _is_num(prev.get("t")) and _is_num(prev.get("dt"))
             and fr["t"] != prev["t"] + prev["dt"], "t is not the previous frame's t + dt"),
            (not isinstance(rs, dict) or not isinstance(rs.get("observation"), list),
             "render_state.observation missing"),
            (not isinstance(events, list) or any(e not in EVENTS for e in events),
             f"events must be a list drawn from {list(EVENTS)}"),
            (n < len(lines) - 1 and bool(fr.get("terminated") or fr.get("truncated")),
             "episode ended before the last frame"),
        )
        problems += [f"frame {n}: {msg}" for bad, msg in checks if bad]
        prev = fr
    return problems

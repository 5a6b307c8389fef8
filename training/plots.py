"""Pictures of a run: learning curves from metrics/windows.jsonl and one replayed episode.

Figures are built on matplotlib's object API (Figure + Agg canvas) rather than pyplot: no global
backend switch, no display needed, nothing left open between calls. The size is fixed
(FIG_SIZE_IN at DPI, no tight bounding box) so the PNG is always FIG_SIZE_PX pixels.

Runs and replays may be remote (``s3://bucket/runs/<id>``, training/storage.py): they are read
from there, and the PNG is written there unless ``out`` names another place.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from training.envs.env_spec import env_settings
from training.envs.plugin import tool
from training.storage import atomic_write_bytes
from training.storage import RemotePath, as_path

FIG_SIZE_IN = (12.0, 9.0)
DPI = 100
FIG_SIZE_PX = (1200, 900)
LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl")
REFERENCE_EPISODES = 50


class PlotError(ValueError):
    """Input that cannot be plotted (missing file, no rows); the message names the file."""


def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=FIG_SIZE_IN, dpi=DPI)


def _save(fig, out: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # Figure.savefig uses the Agg canvas for PNG
    atomic_write_bytes(out, buf.getvalue())
    return out


def load_windows(path) -> list[dict]:
    """Rows of windows.jsonl. A torn last line (crash while appending) is skipped, not fatal."""
    path = as_path(path)
    if not path.is_file():
        raise PlotError(f"{path}: file not found")
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("env_steps_total") is not None:
            rows.append(row)
    if not rows:
        raise PlotError(f"{path}: no window records to plot")
    return rows


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def reference_returns(run_dir, episodes: int = REFERENCE_EPISODES) -> dict[str, float]:
    """{name: mean return} of the reference lines for the run's env: from the run's
    ``reference_returns.json`` ({name: summary or number}) when present, else from the env
    plug-in's ``reference_returns`` hook (the prospector plays its bots on the run's eval seeds),
    else none."""
    run_dir = as_path(run_dir)
    cached = _read_json(run_dir / "reference_returns.json")
    if isinstance(cached, dict) and cached:
        out = {}
        for name, v in cached.items():
            value = v.get("return_mean") if isinstance(v, dict) else v
            if isinstance(value, (int, float)):
                out[str(name)] = float(value)
        return out
    cfg = _read_json(run_dir / "config.json") or {}
    hook = tool(cfg.get("env"), "reference_returns") if episodes > 0 else None
    if hook is None:
        return {}
    seed0 = int(cfg.get("seed", 0)) + int(cfg.get("eval_seed_offset", 100_000))
    return hook(episodes, seed0, **env_settings(cfg))


def _series(rows: list[dict], key: str):
    pts = [(r["env_steps_total"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts]


def _panel(ax, rows, key: str, title: str, label=None):
    x, y = _series(rows, key)
    if x:
        ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, linewidth=1.4, label=label)
    else:
        ax.text(0.5, 0.5, f"no {key} values", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel("env steps")
    ax.grid(True, alpha=0.3)


def plot_learning_curves(run_dir, out=None, references: dict | None = None,
                         reference_episodes: int = REFERENCE_EPISODES) -> Path:
    """return_mean (with reference lines: ``reference_returns``), sps and the four losses against
    env_steps_total.
    -> the PNG path (default ``<run>/plots/learning_curves.png``)."""
    run_dir = as_path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: run directory not found")
    rows = load_windows(run_dir / "metrics" / "windows.jsonl")
    if references is None:
        references = reference_returns(run_dir, reference_episodes)
    fig = _figure()
    axes = fig.subplots(3, 2)
    ax = axes[0][0]
    _panel(ax, rows, "return_mean", "episode return (mean per window)", label="policy")
    colors = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive")
    for i, (name, value) in enumerate(sorted(references.items(), key=lambda kv: -kv[1])):
        ax.axhline(value, linestyle="--", linewidth=1, color=colors[i % len(colors)], label=f"{name} {value:.2f}")
    if references:
        ax.legend(fontsize=7, loc="best")
    _panel(axes[0][1], rows, "sps", "throughput (env steps / s)")
    for ax, key in zip((axes[1][0], axes[1][1], axes[2][0], axes[2][1]), LOSS_KEYS):
        _panel(ax, rows, key, key)
    fig.suptitle(f"run {rows[-1].get('run_id', run_dir.name)}: {len(rows)} windows")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # layout only; the canvas size stays fixed
    return _save(fig, as_path(out) if out else run_dir / "plots" / "learning_curves.png")


def default_replay_png(replay_path) -> Path:
    p = as_path(replay_path)
    name = p.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".png")


def replay_env(replay_path) -> str | None:
    """The env of the run a replay file belongs to (``<run>/replays/<file>``), if it can be told."""
    cfg = _read_json(as_path(replay_path).parent.parent / "config.json")
    return cfg.get("env") if isinstance(cfg, dict) else None


def plot_replay(replay_path, out=None, env: str | None = None) -> Path:
    """One episode, drawn by the env plug-in's ``draw_replay`` hook (``env``: default the env of
    the replay's run), else reward and running return per step."""
    from training.replays import read_replay

    replay_path = as_path(replay_path)
    if not replay_path.is_file():
        raise PlotError(f"{replay_path}: file not found")
    try:
        remote = isinstance(replay_path, RemotePath)
        frames = read_replay(io.BytesIO(replay_path.read_bytes()) if remote else replay_path)
    except (OSError, EOFError, ValueError) as exc:
        raise PlotError(f"{replay_path}: unreadable replay ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise PlotError(f"{replay_path}: no frames")
    fig = _figure()
    env = env or replay_env(replay_path)
    draw = tool(env, "draw_replay") or _draw_generic
    try:
        draw(fig, frames)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise PlotError(f"{replay_path}: cannot be drawn as a replay of {env} ({type(exc).__name__}: {exc})") from None
    fig.suptitle(f"{replay_path.name}: {len(frames)} decisions, return "
                 f"{sum(f.get('reward', 0.0) for f in frames):.3f}")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, as_path(out) if out else default_replay_png(replay_path))


def _draw_generic(fig, frames: list[dict]) -> None:
    x = [f["t"] for f in frames]
    rew = [f.get("reward", 0.0) for f in frames]
    running, total = [], 0.0
    for r in rew:
        total += r
        running.append(total)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ax1.plot(x, rew, linewidth=1.0)
    ax1.set_ylabel("reward")
    ax2.plot(x, running, linewidth=1.2)
    ax2.set_ylabel("return so far")
    ax2.set_xlabel("step")
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)

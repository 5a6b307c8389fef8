"""Pictures of a run: learning curves from metrics/windows.jsonl and one replayed episode.

Figures are built on matplotlib's object API (Figure + Agg canvas) rather than pyplot: no global
backend switch, no display needed, nothing left open between calls. The size is fixed
(FIG_SIZE_IN at DPI, no tight bounding box) so the PNG is always FIG_SIZE_PX pixels.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from training.run_store import atomic_write_bytes

FIG_SIZE_IN = (12.0, 9.0)
DPI = 100
FIG_SIZE_PX = (1200, 900)
LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl")
BOT_EPISODES = 50


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
    path = Path(path)
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


def bot_reference_returns(run_dir, episodes: int = BOT_EPISODES) -> dict[str, float]:
    """{bot: mean return} for the run's env: from ``bots.json`` ({name: summary or number}) when
    present, else played now on the run's eval seeds (prospector runs only; {} otherwise)."""
    run_dir = Path(run_dir)
    cached = _read_json(run_dir / "bots.json")
    if isinstance(cached, dict) and cached:
        out = {}
        for name, v in cached.items():
            value = v.get("return_mean") if isinstance(v, dict) else v
            if isinstance(value, (int, float)):
                out[str(name)] = float(value)
        return out
    cfg = _read_json(run_dir / "config.json") or {}
    if cfg.get("env", "prospector") != "prospector" or episodes <= 0:
        return {}
    from training.evaluate import bot_summaries

    seed0 = int(cfg.get("seed", 0)) + int(cfg.get("eval_seed_offset", 100_000))
    res = bot_summaries(episodes, seed0, cfg.get("env_rules", "v2"), int(cfg.get("env_time_max", 20000)))
    return {name: s["return_mean"] for name, s in res.items()}


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


def plot_learning_curves(run_dir, out=None, bot_returns: dict | None = None,
                         bot_episodes: int = BOT_EPISODES) -> Path:
    """return_mean (with bot reference lines), sps and the four losses against env_steps_total.
    -> the PNG path (default ``<run>/plots/learning_curves.png``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: run directory not found")
    rows = load_windows(run_dir / "metrics" / "windows.jsonl")
    if bot_returns is None:
        bot_returns = bot_reference_returns(run_dir, bot_episodes)
    fig = _figure()
    axes = fig.subplots(3, 2)
    ax = axes[0][0]
    _panel(ax, rows, "return_mean", "episode return (mean per window)", label="policy")
    colors = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:gray", "tab:olive")
    for i, (name, value) in enumerate(sorted(bot_returns.items(), key=lambda kv: -kv[1])):
        ax.axhline(value, linestyle="--", linewidth=1, color=colors[i % len(colors)], label=f"{name} {value:.2f}")
    if bot_returns:
        ax.legend(fontsize=7, loc="best")
    _panel(axes[0][1], rows, "sps", "throughput (env steps / s)")
    for ax, key in zip((axes[1][0], axes[1][1], axes[2][0], axes[2][1]), LOSS_KEYS):
        _panel(ax, rows, key, key)
    fig.suptitle(f"run {rows[-1].get('run_id', run_dir.name)}: {len(rows)} windows")
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # layout only; the canvas size stays fixed
    return _save(fig, Path(out) if out else run_dir / "plots" / "learning_curves.png")


def default_replay_png(replay_path) -> Path:
    p = Path(replay_path)
    name = p.name
    for suffix in (".jsonl.gz", ".jsonl", ".gz"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".png")


def plot_replay(replay_path, out=None) -> Path:
    """One episode: hull, fuel, heat, cargo and credits over ticks, pirate encounters as red
    vertical lines and paid sales as green markers (prospector replays); reward and running
    return per step for other envs."""
    from training.replays import read_replay

    replay_path = Path(replay_path)
    if not replay_path.is_file():
        raise PlotError(f"{replay_path}: file not found")
    try:
        frames = read_replay(replay_path)
    except (OSError, EOFError, ValueError) as exc:
        raise PlotError(f"{replay_path}: unreadable replay ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise PlotError(f"{replay_path}: no frames")
    fig = _figure()
    if all(isinstance(f.get("info", {}).get("after"), dict) for f in frames):
        _draw_prospector(fig, frames)
    else:
        _draw_generic(fig, frames)
    fig.suptitle(f"{replay_path.name}: {len(frames)} decisions, return "
                 f"{sum(f.get('reward', 0.0) for f in frames):.3f}")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, Path(out) if out else default_replay_png(replay_path))


def _draw_prospector(fig, frames: list[dict]) -> None:
    # Each frame's info.after is the ship after the step, at tick t + dt; the start comes from
    # frame 0's observation (gauges are obs[0:5] scaled, credits start at render_state.credits).
    from training.envs.prospector_consts import CARGO_MAX, FUEL_MAX, HEAT_MAX, HULL_MAX

    o0, rs0 = frames[0]["render_state"]["observation"], frames[0]["render_state"]
    start = {"hull": o0[1] * HULL_MAX, "fuel": o0[0] * FUEL_MAX, "heat": o0[2] * HEAT_MAX,
             "cargo": o0[4] * CARGO_MAX, "credits": rs0.get("credits", 0.0)}
    x = [frames[0]["t"]] + [f["t"] + f["dt"] for f in frames]
    keys = (("hull", "hull"), ("fuel", "fuel"), ("heat", "heat"), ("cargo", "cargo (units)"),
            ("credits", "credits"))
    axes = fig.subplots(len(keys), 1, sharex=True)
    enc = [f["t"] + f["dt"] for f in frames if "pirate_encounter" in f["events"]]
    sales = [(f["t"] + f["dt"], f["info"]["after"]["credits"]) for f in frames if f["info"].get("sale")]
    for ax, (key, label) in zip(axes, keys):
        ax.plot(x, [start[key]] + [f["info"]["after"][key] for f in frames], linewidth=1.2)
        for t in enc:
            ax.axvline(t, color="tab:red", alpha=0.5, linewidth=0.8)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if sales:
        axes[-1].scatter([s[0] for s in sales], [s[1] for s in sales], marker="^", color="tab:green",
                         zorder=3, label=f"sales ({len(sales)})")
    if enc:
        axes[0].plot([], [], color="tab:red", label=f"pirate encounters ({len(enc)})")
    for ax in (axes[0], axes[-1]):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("ticks")


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

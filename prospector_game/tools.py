"""The game's tool hooks (``training.envs.plugin.TOOL_HOOKS``): the scripted bots beside the policy
in ``prospector eval`` and as reference lines in ``prospector plot``, the game's own columns in the
eval table, and replays with the game's state (``prospector_game.replays``)."""

from __future__ import annotations

from prospector_game.bot_eval import play_first_episodes
from prospector_game.bots import BOTS, make_bots
from prospector_game.replays import draw_replay, record_replay  # noqa: F401 (hooks)
from training.evaluate import summarize

eval_columns = (
    ("survival_mean", "survival", "{:.3f}"),
    ("net_profit_mean", "net profit", "{:.1f}"),
    ("profit_per_tick_mean", "profit/tick", "{:.4f}"),
    ("ticks_mean", "ticks/ep", "{:.1f}"),
)


def baselines(episodes: int, seed0: int, rules=None, time_max=None, names=None) -> dict:
    """{bot: summary} for the scripted bots (default: all of BOTS) on seeds seed0 ..
    seed0+episodes-1, the seeds a policy is evaluated on, all in one batch of envs."""
    names = list(BOTS) if names is None else list(names)
    table = make_bots(rules or "v2")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown bot(s) {unknown}; known: {sorted(table)}")
    played = play_first_episodes({n: table[n] for n in names}, episodes, seed0, rules or "v2", time_max or 20000)
    return {name: summarize([dict(r, seed=seed0 + e) for e, r in enumerate(records)])
            for name, records in played.items()}


def reference_returns(episodes: int, seed0: int, rules=None, time_max=None) -> dict[str, float]:
    """{bot: mean return}: the plot's reference lines."""
    return {name: s["return_mean"] for name, s in baselines(episodes, seed0, rules, time_max).items()}

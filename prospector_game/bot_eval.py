"""Evaluate scripted bots (or any batch policy) on seeded episodes, one episode per seed.

All policies play in one batched ProspectorEnv (policy p, seed e at row p*episodes + e), which
is exact because an env's trajectory depends only on its seed and actions. An env that has
finished its first episode is fed HOLD until the last one finishes, so it costs little and never
re-enters the statistics.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from .bots import BOTS, make_bots
from .env import ProspectorEnv
from .consts import A_HOLD

Policy = Callable[[np.ndarray], np.ndarray]


def summarize(infos: list) -> dict:
    """Aggregate per-episode info dicts into the benchmark metrics."""
    ret = np.array([d["episode_return"] for d in infos])
    f = lambda k: float(np.mean([d[k] for d in infos]))  # noqa: E731
    return {
        "episodes": len(infos),
        "return_mean": float(ret.mean()),
        "return_median": float(np.median(ret)),
        "survival_rate": f("survival"),
        "net_profit_mean": f("net_profit"),
        "net_profit_median": float(np.median([d["net_profit"] for d in infos])),
        "profit_per_tick_mean": f("profit_per_tick"),
        "ticks_mean": f("ticks"),
        "decisions_mean": f("episode_length"),
        "overheat_ticks_mean": f("overheat_ticks"),
        "pirate_encounters_mean": f("pirate_encounters"),
        "hull_damage_mean": f("hull_damage"),
        "endings": {
            "destroyed": int(sum(d["destroyed"] for d in infos)),
            "stranded": int(sum(d["stranded"] for d in infos)),
            "cashed_out": int(sum(d["cashed_out"] for d in infos)),
            "time_limit": int(sum(d["truncated"] for d in infos)),
        },
    }


def play_first_episodes(policies: Mapping[str, Policy], episodes: int = 200, seed0: int = 0,
                        rules="v2", time_max: int = 20000) -> dict[str, list[dict]]:
    """{name: the env's info dict of each seed's episode, in seed order} for each policy over seeds
    seed0 .. seed0+episodes-1."""
    names = list(policies)
    fns = [policies[n] for n in names]
    B = int(episodes)
    N = B * len(names)
    env = ProspectorEnv(num_envs=N, rules=rules, time_max=time_max)
    seeds = np.tile(np.arange(B, dtype=np.int64) + int(seed0), len(names))
    obs, _ = env.reset_with_seeds(seeds.tolist())
    done = np.zeros(N, bool)
    records: list = [None] * N
    actions = np.empty(N, np.int64)
    while not done.all():
        for p, fn in enumerate(fns):
            sl = slice(p * B, (p + 1) * B)
            actions[sl] = fn(obs[sl])
        actions[done] = A_HOLD
        obs, _, _, _, infos = env.step(actions)
        for d in infos:
            i = d["env_index"]
            if not done[i]:
                done[i] = True
                records[i] = d
    env.close()
    return {n: records[p * B:(p + 1) * B] for p, n in enumerate(names)}


def evaluate_policies(policies: Mapping[str, Policy], episodes: int = 200, seed0: int = 0,
                      rules="v2", time_max: int = 20000) -> dict:
    """{name: metrics} for each policy over seeds seed0 .. seed0+episodes-1."""
    played = play_first_episodes(policies, episodes, seed0, rules, time_max)
    return {name: summarize(records) for name, records in played.items()}


def evaluate_bots(names=None, episodes: int = 200, seed0: int = 0, rules="v2",
                  time_max: int = 20000) -> dict:
    """Metrics of the named bots (default: all of BOTS) over seeded episodes."""
    names = list(BOTS) if names is None else list(names)
    unknown = [n for n in names if n not in BOTS]
    if unknown:
        raise ValueError(f"unknown bot(s) {unknown}; known: {sorted(BOTS)}")
    table = make_bots(rules)
    return evaluate_policies({n: table[n] for n in names}, episodes, seed0, rules, time_max)

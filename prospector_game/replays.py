"""The game's replays: frames that carry the game's state (the ``record_replay`` tool hook), and
their picture (``draw_replay``).

A frame's ``render_state`` holds what the agent saw when deciding (``RENDER_KEYS``: the
observation, time left, credits, net profit, survival, cargo use, where the ship is) and its
``info.after`` the ship after the step, so the end of the episode (a destroyed hull) is in the file
too; ``t`` and ``dt`` are game ticks. The schema is docs/RUN_ARTIFACTS.md, "Replays".
"""

from __future__ import annotations

import numpy as np

from prospector_game.consts import (
    A_FUEL_S, A_SELL0, CARGO_MAX, COMMODITIES, FUEL_MAX, HEAT_MAX, HULL_MAX, NODE_CLUSTER, NODE_HAZARD,
    NODE_STATION, SELL_FRACTIONS,
)
from prospector_game.env import ProspectorEnv
from training.replays import SCHEMA_VERSION, episode_record, obs_list

RENDER_KEYS = ("observation", "time_remaining", "credits", "net_profit", "survival", "cargo_utilization_avg",
               "node_context")


def _render_state(sim, obs) -> dict:
    """Decision-time state of env 0 (alive by construction: finished envs are not asked to act)."""
    now = _sim_after(sim)
    node, sel = now["node"], int(sim.sel[0])
    ntype = int(sim.node_type[0, node])
    rs = {k: now[k] for k in ("time_remaining", "credits", "net_profit", "survival", "cargo_utilization_avg")}
    rs["observation"] = obs_list(obs)
    rs["node_context"] = {
        "node": node, "at_station": node == 0, "distance_to_station": int(sim.dist[0, node]),
        "node_type": {NODE_STATION: "station", NODE_CLUSTER: "cluster", NODE_HAZARD: "hazard"}.get(ntype, str(ntype)),
        "neighbors": int((sim.nbr[0, node] >= 0).sum()), "selected_asteroid": sel if sel >= 0 else None}
    return rs


def _sim_after(sim) -> dict:
    ticks = int(sim.ticks[0])
    out = {"ticks": ticks, "credits": float(sim.credits[0]), "net_profit": float(sim.net_profit()[0]),
           "survival": 1, "pirate_encounters": int(sim.encounters[0]),
           "overheat_ticks": int(sim.overheat_ticks[0]), "time_remaining": int(sim.time_remaining[0]),
           "cargo_utilization_avg": float(sim.util_acc[0] / max(1, ticks)),
           "invalid_action": bool(sim.last_invalid[0]), "node": int(sim.node[0])}
    for k in ("fuel", "hull", "heat", "tool", "alert"):
        out[k] = round(float(getattr(sim, k)[0]), 3)
    out["cargo"] = round(float(sim.cargo[0].sum()), 3)
    out["cargo_by_commodity"] = [round(float(v), 3) for v in sim.cargo[0]]
    return out


class _StepTap:
    """Copies env 0's simulator state the moment ``sim.step`` returns. ProspectorEnv resets a
    finished env inside the same ``step()`` call, so reading the arrays afterwards would show the
    next episode's start instead of how this one ended. Wraps this instance only."""

    def __init__(self, sim):
        self.after = None
        inner = sim.step

        def step(a):
            out = inner(a)
            self.after = _sim_after(sim)
            return out

        sim.step = step


def record_replay(act, seed: int, rules=None, time_max=None, max_steps=None) -> dict:
    """The ``record_replay`` tool hook: one episode on ``seed``, frame by frame, ``t`` in game ticks."""
    env = ProspectorEnv(num_envs=1, rules=rules or "v2", time_max=time_max or 20000)
    obs, _ = env.reset_with_seeds([seed])
    sim, frames, cut, last = env.sim, [], False, None
    tap = _StepTap(sim)
    while last is None:
        if max_steps is not None and len(frames) >= max_steps:
            cut = True
            break
        state = _render_state(sim, obs[0])
        a = int(np.asarray(act(obs)).reshape(-1)[0])
        t0, credits0 = int(sim.ticks[0]), float(sim.credits[0])
        enc0, heat0 = int(sim.encounters[0]), int(sim.overheat_ticks[0])
        obs, rew, term, trunc, infos = env.step(np.array([a], np.int64))
        last = infos[0] if infos else None
        after = dict(tap.after)
        if last is not None:
            after["survival"] = int(last["survival"])  # 0 when destroyed or stranded
        events = [name for name, hit in (
            ("invalid_action", after.pop("invalid_action")),
            ("pirate_encounter", after["pirate_encounters"] > enc0),
            ("overheat_tick", after["overheat_ticks"] > heat0), ("terminated", bool(term[0])),
            ("truncated", bool(trunc[0]))) if hit]
        extra = {"after": after}
        if A_SELL0 <= a < A_FUEL_S and after["credits"] > credits0:  # a sale that paid
            k = a - A_SELL0
            extra["sale"] = {"commodity": COMMODITIES[k // 3], "fraction": SELL_FRACTIONS[k % 3],
                             "credits": round(after["credits"] - credits0, 6)}
        frames.append({"schema_version": SCHEMA_VERSION, "frame_index": len(frames), "t": t0,
                       "dt": after["ticks"] - t0, "action": a, "reward": float(rew[0]),
                       "terminated": bool(term[0]), "truncated": bool(trunc[0]),
                       "render_state": state, "events": events, "info": extra})
    env.close()
    end = frames[-1]["info"]["after"] if frames else _sim_after(sim)
    return episode_record(frames, cut, profit=end["net_profit"], survival=end["survival"],
                    ticks=end["ticks"])


def draw_replay(fig, frames: list[dict]) -> None:
    """The ``draw_replay`` tool hook: hull, fuel, heat, cargo and credits over ticks, pirate
    encounters as red vertical lines and paid sales as green markers."""
    # Each frame's info.after is the ship after the step, at tick t + dt; the start comes from
    # frame 0's observation (gauges are obs[0:5] scaled, credits start at render_state.credits).
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

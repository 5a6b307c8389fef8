"""Single-env Gymnasium view of the same vectorized simulator (batch of one).

Unlike the PufferLib env it does not auto-reset: a finished episode returns its final
observation and the caller resets. `reset()` without a seed continues the env's seed chain, so
consecutive episodes match those an env of ProspectorEnv plays after auto-resets.
"""

from __future__ import annotations

import gymnasium
import numpy as np

from .env import check_actions
from .consts import N_ACTIONS, OBS_DIM, get_rules
from .obs import build_obs
from .rng import U64, next_episode_seed, to_seed64
from .sim import ProspectorSim

_ZERO = np.zeros(1, bool)


class ProspectorGymEnv(gymnasium.Env):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, rules="v2", time_max: int = 20000, render_mode=None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.rules = get_rules(rules)
        self.render_mode = render_mode
        self.observation_space = gymnasium.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(N_ACTIONS)
        self.sim = ProspectorSim(1, self.rules, time_max)
        self._obs = np.zeros((1, OBS_DIM), np.float32)
        self._zero = np.zeros(1, np.int64)
        self._seeded = False
        self._needs_reset = True

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            s = np.asarray([to_seed64(seed)], U64)
        elif not self._seeded:
            s = np.asarray([to_seed64(0)], U64)
        else:
            s = next_episode_seed(self.sim.seed)
        self._seeded = True
        self.sim.start_episodes(self._zero, s)
        build_obs(self.sim, self._obs)
        self._needs_reset = False
        return self._obs[0].copy(), self._info(_ZERO, _ZERO, (_ZERO, _ZERO, _ZERO))

    def step(self, action):
        if self._needs_reset:
            raise RuntimeError("episode has ended (or never started): call reset() first")
        a = check_actions(np.asarray(action).reshape(1), 1)
        rew, term, trunc, flags = self.sim.step(a)
        build_obs(self.sim, self._obs)
        self._needs_reset = bool(term[0] or trunc[0])
        return (self._obs[0].copy(), float(rew[0]), bool(term[0]), bool(trunc[0]),
                self._info(term, trunc, flags))

    def _info(self, term, trunc, flags) -> dict:
        """Rules section 9 keys (reset: action -1, dt 0)."""
        s = self.sim
        destroyed, stranded, cashed = flags
        ticks = int(s.ticks[0])
        net = float(s.net_profit()[0])
        return {
            "action": int(s.last_action[0]),
            "dt": int(s.last_dt[0]),
            "invalid_action": bool(s.last_invalid[0]),
            "credits": float(s.credits[0]),
            "net_profit": net,
            "profit_per_tick": net / max(1, ticks),
            "survival": int(not (destroyed[0] or stranded[0])),
            "overheat_ticks": int(s.overheat_ticks[0]),
            "pirate_encounters": int(s.encounters[0]),
            "value_lost_to_pirates": float(s.value_lost[0]),
            "fuel_used": float(s.fuel_used[0]),
            "hull_damage": float(s.hull_damage[0]),
            "tool_wear": float(s.tool_wear[0]),
            "scan_count": int(s.scan_count[0]),
            "mining_ticks": int(s.mining_ticks[0]),
            "cargo_utilization_avg": float(s.util_acc[0]) / max(1, ticks),
            "terminated": bool(term[0]),
            "truncated": bool(trunc[0]),
            "destroyed": bool(destroyed[0]),
            "stranded": bool(stranded[0]),
            "cashed_out": bool(cashed[0]),
            "node_context": "station" if s.node[0] == 0 else "field",
            "time_remaining": int(s.time_remaining[0]),
            "ticks": ticks,
        }

    def render(self):
        if self.render_mode != "ansi":
            return None
        s = self.sim
        return (f"t={int(s.ticks[0])} node={int(s.node[0])} fuel={s.fuel[0]:.0f} "
                f"hull={s.hull[0]:.1f} heat={s.heat[0]:.1f} tool={s.tool[0]:.0f} "
                f"alert={s.alert[0]:.0f} cargo={s.cargo[0].sum():.1f} credits={s.credits[0]:.0f}")

    def close(self):
        pass

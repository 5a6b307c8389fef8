"""Asteroid Belt Prospector as a native, vectorized PufferLib environment.

One ProspectorEnv simulates `num_envs` independent games in NumPy (sim.py). Env i of a
batch made with seed s plays seed s + i first; each later episode's seed comes from that env's own
seed chain (rng.next_episode_seed), so env i never depends on the batch around it.
Finished envs are reset inside `step`: the returned row is the new episode's first observation,
while `final_observations` keeps the observation each finished env ended on.
"""

from __future__ import annotations

import copy

import gymnasium
import numpy as np
import pufferlib

from .consts import N_ACTIONS, OBS_DIM, get_rules
from .obs import build_obs
from .rng import U64, next_episode_seed, to_seed64
from .queue import WorldQueue
from .sim import ProspectorSim

EPISODE_INFO_KEYS = (
    "credits", "net_profit", "profit_per_tick", "survival", "overheat_ticks",
    "pirate_encounters", "value_lost_to_pirates", "fuel_used", "hull_damage", "tool_wear",
    "scan_count", "mining_ticks", "cargo_utilization_avg", "episode_return", "episode_length",
    "ticks", "terminated", "truncated", "env_index", "destroyed", "stranded", "cashed_out",
)
_INT_KEYS = frozenset(("overheat_ticks", "pirate_encounters", "scan_count", "mining_ticks",
                       "episode_length", "ticks", "terminated", "truncated", "env_index",
                       "destroyed", "stranded", "cashed_out", "survival"))


def check_actions(a, n: int) -> np.ndarray:
    """Validate an action batch; the env is not a place to hide bugs in callers, so an
    out-of-range id raises instead of being played as an invalid HOLD (both rule sets)."""
    arr = np.asarray(a)
    if arr.size != n:
        raise ValueError(f"expected {n} actions, got array of shape {arr.shape}")
    arr = arr.reshape(n)
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"actions must be integers in 0..{N_ACTIONS - 1}, "
                             f"got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = (arr < 0) | (arr >= N_ACTIONS)
    if bad.any():
        where = np.flatnonzero(bad)
        shown = ", ".join(f"env {i}: {int(arr[i])}" for i in where[:8])
        more = f" (+{len(where) - 8} more)" if len(where) > 8 else ""
        raise ValueError(f"action id out of range 0..{N_ACTIONS - 1}: {shown}{more}")
    return arr


def episode_infos(sim, idx, terminated, truncated, destroyed, stranded, cashed) -> list:
    """One dict of scalars per finished env in idx (read before the env is reset)."""
    ticks = sim.ticks[idx]
    net = sim.net_profit()[idx]
    dz = destroyed[idx] | stranded[idx]
    cols = (
        sim.credits[idx], net, net / np.maximum(1, ticks), (~dz).astype(np.int64),
        sim.overheat_ticks[idx], sim.encounters[idx], sim.value_lost[idx], sim.fuel_used[idx],
        sim.hull_damage[idx], sim.tool_wear[idx], sim.scan_count[idx], sim.mining_ticks[idx],
        sim.util_acc[idx] / np.maximum(1, ticks), sim.ep_return[idx], sim.t[idx], ticks,
        terminated[idx], truncated[idx], idx, destroyed[idx], stranded[idx], cashed[idx],
    )
    rows = zip(*[c.tolist() for c in cols])
    out = []
    for row in rows:
        d = dict(zip(EPISODE_INFO_KEYS, row))
        for key in _INT_KEYS:
            d[key] = int(d[key])
        out.append(d)
    return out


class ProspectorEnv(pufferlib.PufferEnv):
    metadata = {"render_modes": []}

    def __init__(self, num_envs: int = 1, seed: int = 0, rules="v2", time_max: int = 20000,
                 buf=None):
        self.rules = get_rules(rules)
        if int(time_max) < 1:
            raise ValueError(f"time_max must be >= 1, got {time_max}")
        self.single_observation_space = gymnasium.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
        self.single_action_space = gymnasium.spaces.Discrete(N_ACTIONS)
        self.num_agents = int(num_envs)
        self.num_envs = int(num_envs)
        self.time_max = int(time_max)
        super().__init__(buf)
        self.sim = ProspectorSim(self.num_agents, self.rules, self.time_max)
        self.queue = WorldQueue(self.rules, self.num_agents)
        self.final_observations = np.zeros((self.num_agents, OBS_DIM), np.float32)
        self._seed = 0 if seed is None else int(seed)
        self._started = False
        self._all = np.arange(self.num_agents)

    @property
    def episode_seeds(self) -> np.ndarray:
        """The uint64 seed of each env's current episode."""
        return self.sim.seed.copy()

    def reset(self, seed=None):
        if seed is None and self._started:
            seeds = next_episode_seed(self.sim.seed)
        else:
            base = self._seed if seed is None else int(seed)
            seeds = to_seed64(base) + np.arange(self.num_agents, dtype=U64)
        self._started = True
        self.sim.start_episodes(self._all, seeds)
        self.queue.clear(seeds)
        build_obs(self.sim, self.observations)
        self.final_observations[:] = self.observations
        self.rewards[:] = 0.0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        return self.observations, []

    def reset_with_seeds(self, seeds):
        """Start env i on episode seed seeds[i] (evaluation harnesses: many policies on the same
        seeds in one batch). Later episodes follow each env's own seed chain as usual."""
        seeds = [int(x) & 0xFFFFFFFFFFFFFFFF for x in seeds]
        if len(seeds) != self.num_agents:
            raise ValueError(f"expected {self.num_agents} seeds, got {len(seeds)}")
        seeds = np.asarray(seeds, dtype=U64)
        self._started = True
        self.sim.start_episodes(self._all, seeds)
        self.queue.clear(seeds)
        self.rewards[:] = 0.0
        self.terminals[:] = False
        self.truncations[:] = False
        self.masks[:] = True
        build_obs(self.sim, self.observations)
        self.final_observations[:] = self.observations
        return self.observations, []

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = check_actions(actions, self.num_agents)
        sim = self.sim
        rew, term, trunc, (destroyed, stranded, cashed) = sim.step(a)
        self.rewards[:] = rew
        self.terminals[:] = term
        self.truncations[:] = trunc
        build_obs(sim, self.observations)
        done = term | trunc
        infos = []
        if done.any():
            d = np.flatnonzero(done)
            self.final_observations[d] = self.observations[d]
            infos = episode_infos(sim, d, term, trunc, destroyed, stranded, cashed)
            seeds, worlds = self.queue.pop(d)
            sim.start_episodes(d, seeds, worlds)
            build_obs(sim, self.observations, d)
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def get_state(self) -> dict:
        """A snapshot of every env's game (the simulator's arrays, including the prefetched worlds
        and each env's random counters), so a resumed run continues the same trajectories."""
        # one deepcopy call, so arrays shared between the simulator and the queue stay shared
        sim, queue = copy.deepcopy((self.sim, self.queue))
        return dict(sim=sim, queue=queue, started=self._started, seed=self._seed,
                    observations=self.observations.copy(), final_observations=self.final_observations.copy())

    def set_state(self, state: dict) -> None:
        if state["sim"].N != self.num_agents:
            raise ValueError(f"snapshot holds {state['sim'].N} envs, this env has {self.num_agents}")
        self.sim, self.queue = copy.deepcopy((state["sim"], state["queue"]))
        self._started, self._seed = state["started"], state["seed"]
        self.observations[:] = state["observations"]  # the buffer is shared with PufferLib: write in place
        self.final_observations[:] = state["final_observations"]

    def close(self):
        pass

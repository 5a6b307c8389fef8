"""Discrete observation parts as int32, so PufferLib's emulation keeps them.

PufferLib 3.0's emulation packs a structured observation into one Box whose element type is the
leaves' common dtype, and stores a Discrete or MultiDiscrete leaf as int32. Gymnasium's Discrete
spaces are int64, so for an observation whose leaves are all discrete (``Discrete(4)``,
Blackjack's ``Tuple(Discrete, Discrete, Discrete)``) the packed Box gets ``int32 bytes / 8``
elements: zero or half of what it needs, and the observation is silently lost. Declaring those
leaves int32, as the emulation stores them, gives it the right size; the policy still sees
``Discrete`` parts (``EnvInfo.native_observation_space``) and one-hot encodes them.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces


def int32_discretes(space: spaces.Space) -> spaces.Space:
    """``space`` with every Discrete and MultiDiscrete leaf declared int32."""
    if isinstance(space, spaces.Discrete):
        return spaces.Discrete(int(space.n), start=int(space.start), dtype=np.int32)
    if isinstance(space, spaces.MultiDiscrete):
        return spaces.MultiDiscrete(space.nvec, dtype=np.int32, start=space.start)
    if isinstance(space, spaces.Tuple):
        return spaces.Tuple([int32_discretes(s) for s in space.spaces])
    if isinstance(space, spaces.Dict):
        return spaces.Dict({k: int32_discretes(s) for k, s in space.spaces.items()})
    return space


def needs_int32(space: spaces.Space) -> bool:
    """True when ``space`` is emulated (not a Box) and holds a discrete leaf that is not int32."""
    return not isinstance(space, spaces.Box) and int32_discretes(space) != space


def as_int32(obs, space: spaces.Space):
    """An observation of ``space`` with its discrete leaves as int32."""
    if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
        return np.asarray(obs, dtype=np.int32)
    if isinstance(space, spaces.Tuple):
        return tuple(as_int32(o, s) for o, s in zip(obs, space.spaces))
    if isinstance(space, spaces.Dict):
        return {k: as_int32(obs[k], s) for k, s in space.spaces.items()}
    return obs


class Int32Discretes(gymnasium.ObservationWrapper):
    """A Gymnasium env whose discrete observation leaves are int32 (see the module's docstring)."""

    def __init__(self, env: gymnasium.Env):
        super().__init__(env)
        self._native = env.observation_space
        self.observation_space = int32_discretes(env.observation_space)

    def observation(self, observation):
        return as_int32(observation, self._native)


class Int32DiscretesParallel:
    """The same for a PettingZoo parallel env (its agents share one space: ``registry`` checks)."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name):  # possible_agents, agents, metadata, render_mode, ...
        return getattr(self.env, name)

    def observation_space(self, agent):
        return int32_discretes(self.env.observation_space(agent))

    def action_space(self, agent):
        return self.env.action_space(agent)

    def _convert(self, observations: dict) -> dict:
        return {a: as_int32(o, self.env.observation_space(a)) for a, o in observations.items()}

    def reset(self, seed=None, options=None):
        observations, infos = self.env.reset(seed=seed, options=options)
        return self._convert(observations), infos

    def step(self, actions):
        observations, *rest = self.env.step(actions)
        return (self._convert(observations), *rest)

    def close(self):
        self.env.close()

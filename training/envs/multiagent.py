"""A two-agent cooperative game, native and as a PettingZoo parallel env: a template for users'
multi-agent envs and the learning check of the multi-agent path (``tests/test_multiagent.py``).

Each step shows both agents a target in 0..3. Agent 0 must play its high bit, agent 1 its low bit;
both get reward 1 when both are right, else 0: neither scores alone. Observation: the target
one-hot and the agent's own id one-hot (6 floats). Episodes last ``length`` steps, so the optimal
return per agent is ``length`` (8 by default) and uniform play earns a quarter of it.

``coop_target(num_envs, seed)`` is the native form: one PufferEnv of ``num_envs`` envs, agents
2i and 2i + 1 in env i (``--env training.envs.multiagent:coop_target``).
``coop_target_parallel()`` is one env with PettingZoo's parallel API (``possible_agents``,
``observation_space(agent)``, ``reset``, ``step`` over dicts); the trainer wraps it in
``pufferlib.emulation.PettingZooPufferEnv`` (``--env training.envs.multiagent:coop_target_parallel``).
"""

from __future__ import annotations

import numpy as np
import pufferlib
from gymnasium import spaces

AGENTS = 2
OBS = spaces.Box(0.0, 1.0, (6,), np.float32)
ACTIONS = spaces.Discrete(2)


def _observe(targets: np.ndarray, out: np.ndarray) -> None:
    """``out`` (envs, 2, 6): the target one-hot in 0..3, the agent's id one-hot in 4..5."""
    out[:] = 0.0
    out[np.arange(len(targets)), :, targets] = 1.0
    out[:, 0, 4] = 1.0
    out[:, 1, 5] = 1.0


def _team_reward(targets: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """(envs,) 1.0 where both agents of an env played their bit of its target."""
    return ((actions[:, 0] == targets // 2) & (actions[:, 1] == targets % 2)).astype(np.float32)


class CoopTargetEnv(pufferlib.PufferEnv):
    def __init__(self, num_envs: int = 4, seed: int = 0, length: int = 8, buf=None):
        self.single_observation_space = OBS
        self.single_action_space = ACTIONS
        self.num_agents = AGENTS * num_envs
        super().__init__(buf)
        self.num_envs, self.length = num_envs, int(length)
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.targets = np.zeros(num_envs, dtype=np.int64)
        self.final_observations = np.zeros_like(self.observations)

    def _show(self):
        self.targets = self.rng.integers(0, 4, self.num_envs)
        _observe(self.targets, self.observations.reshape(self.num_envs, AGENTS, -1))

    def reset(self, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t[:] = 0
        self._show()
        return self.observations, []

    def step(self, actions):
        actions = np.asarray(actions).reshape(self.num_envs, AGENTS)
        self.rewards[:] = np.repeat(_team_reward(self.targets, actions), AGENTS)
        self.t += 1
        done = self.t >= self.length
        self.terminals[:] = np.repeat(done, AGENTS)
        self.truncations[:] = False
        self.t[done] = 0
        self._show()
        self.final_observations[:] = self.observations  # the targets are fresh draws: any obs is a final one
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def close(self):
        pass


def coop_target(num_envs: int = 4, seed: int = 0, length: int = 8) -> CoopTargetEnv:
    return CoopTargetEnv(num_envs=num_envs, seed=seed, length=length)


class CoopTargetParallel:
    """The same game as one PettingZoo parallel env (the API only: PettingZoo need not be installed)."""

    metadata = {"name": "coop_target_v0"}
    render_mode = None

    def __init__(self, length: int = 8):
        self.possible_agents = [f"agent_{i}" for i in range(AGENTS)]
        self.agents: list[str] = []
        self.length = int(length)
        self.rng = np.random.default_rng()
        self.t, self.target = 0, 0

    def observation_space(self, agent):
        return OBS

    def action_space(self, agent):
        return ACTIONS

    def _observations(self) -> dict:
        obs = np.zeros((1, AGENTS, OBS.shape[0]), np.float32)
        _observe(np.array([self.target]), obs)
        return {agent: obs[0, i] for i, agent in enumerate(self.possible_agents)}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.t, self.target = 0, int(self.rng.integers(0, 4))
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict):
        played = np.array([[int(actions.get(agent, -1)) for agent in self.possible_agents]])  # -1: gone
        reward = float(_team_reward(np.array([self.target]), played)[0])
        self.t += 1
        self.target = int(self.rng.integers(0, 4))
        done = self.t >= self.length
        agents = self.agents
        if done:
            self.agents = []
        return (self._observations(), {a: reward for a in agents}, {a: done for a in agents},
                {a: False for a in agents}, {a: {} for a in agents})

    def close(self):
        pass


def coop_target_parallel(length: int = 8) -> CoopTargetParallel:
    return CoopTargetParallel(length=length)

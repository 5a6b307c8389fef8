"""Partially observed envs, which a feed-forward policy cannot solve and a recurrent one can.

- ``recall``: a cue shown only at an episode's first step decides the reward at its last step
  (``--env training.envs.partial:recall``); a test of memory and of training through time.
- ``cartpole_positions``: Gymnasium's CartPole-v1 with the velocities hidden, so the policy must
  infer them from successive positions. Its plug-in (``--env cartpole_positions``,
  ``training.envs.classic_control``) presets an LSTM and settings that reach a return of 500
  (docs/BENCHMARKS.md, "Recurrent policies").
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pufferlib
from gymnasium import spaces


class RecallEnv(pufferlib.PufferEnv):
    """Episodes of ``length`` steps. At the first step env i observes a cue, one of two, drawn at
    random: ``[cue == 0, cue == 1, 0]``; later steps show ``[0, 0, last]`` (``last`` 1 at the final
    step). The final action earns 1 when it names the cue, and the episode terminates; every other
    step earns 0. Optimal return 1; a policy without memory gets 0.5 at best."""

    def __init__(self, num_envs: int = 4, seed: int = 0, length: int = 16, buf=None):
        self.single_observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.num_agents = num_envs
        super().__init__(buf)
        self.length = length
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.cue = self.rng.integers(0, 2, num_envs)

    def _write_obs(self):
        first = self.t == 0
        self.observations[:, 0] = first & (self.cue == 0)
        self.observations[:, 1] = first & (self.cue == 1)
        self.observations[:, 2] = self.t == self.length - 1

    def reset(self, seed=None):
        self.t[:] = 0
        self._write_obs()
        return self.observations, []

    def step(self, actions):
        actions = np.asarray(actions).reshape(-1)
        done = self.t == self.length - 1
        self.rewards[:] = done & (actions == self.cue)
        self.terminals[:] = done
        self.truncations[:] = False
        self.t += 1
        self.t[done] = 0
        self.cue[done] = self.rng.integers(0, 2, int(done.sum()))
        self._write_obs()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def get_state(self):  # a snapshot for exact resume (RolloutCollector.exact_state)
        return {"t": self.t.copy(), "cue": self.cue.copy(), "rng": self.rng.bit_generator.state}

    def set_state(self, state):
        self.t, self.cue = np.array(state["t"]), np.array(state["cue"])
        self.rng.bit_generator.state = state["rng"]
        self._write_obs()

    def close(self):
        pass


def recall(num_envs: int = 4, seed: int = 0, length: int = 16):
    return RecallEnv(num_envs=num_envs, seed=seed, length=length)


def cartpole_positions():
    """CartPole-v1 observing only the cart's position and the pole's angle."""
    env = gymnasium.make("CartPole-v1")
    full = env.observation_space
    space = spaces.Box(full.low[[0, 2]], full.high[[0, 2]], dtype=np.float32)
    return gymnasium.wrappers.TransformObservation(env, lambda obs: obs[[0, 2]], space)

"""Small native PufferEnvs: a template for users' factories (``--env training.envs.examples:countdown``)
and a fixture for tests of the trainer's plumbing (episode accounting, bootstrapping, bad output)."""

from __future__ import annotations

import numpy as np
import pufferlib
from gymnasium import spaces


class CountdownEnv(pufferlib.PufferEnv):
    """Env i runs episodes of ``length + i % 3`` steps. Reward 1 when the action equals i % 2.
    Even envs end by termination, odd envs by truncation (time limit). Observation: [steps left
    / length, i / num_envs]. ``fault`` injects bad output: "nan" rewards or a "shape" error."""

    def __init__(self, num_envs: int = 4, seed: int = 0, length: int = 5, fault: str | None = None, buf=None):
        self.single_observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.num_agents = num_envs
        super().__init__(buf)
        self.length = length
        self.fault = fault
        self.index = np.arange(num_envs)
        self.limit = length + self.index % 3
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.final_observations = np.zeros((num_envs, 2), dtype=np.float32)

    def _write_obs(self):
        self.observations[:, 0] = (self.limit - self.t) / self.length
        self.observations[:, 1] = self.index / self.num_agents

    def reset(self, seed=None):
        self.t[:] = 0
        self._write_obs()
        return self.observations, []

    def step(self, actions):
        actions = np.asarray(actions)
        self.t += 1
        self.rewards[:] = (actions == self.index % 2).astype(np.float32)
        done = self.t >= self.limit
        self.terminals[:] = done & (self.index % 2 == 0)
        self.truncations[:] = done & (self.index % 2 == 1)
        self._write_obs()
        self.final_observations[done] = self.observations[done]
        infos = [dict(env_index=int(i), score=float(self.limit[i])) for i in np.flatnonzero(done)]
        self.t[done] = 0
        self._write_obs()
        if self.fault == "nan":
            self.rewards[0] = np.nan
        if self.fault == "shape":
            return self.observations[:, :1], self.rewards, self.terminals, self.truncations, infos
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def close(self):
        pass


def countdown(num_envs: int = 4, seed: int = 0):
    return CountdownEnv(num_envs=num_envs, seed=seed)


def countdown_nan(num_envs: int = 4, seed: int = 0):
    return CountdownEnv(num_envs=num_envs, seed=seed, fault="nan")


def countdown_bad_shape(num_envs: int = 4, seed: int = 0):
    return CountdownEnv(num_envs=num_envs, seed=seed, fault="shape")


class MultiCountdownEnv(CountdownEnv):
    """CountdownEnv with a MultiDiscrete([2, 3]) action: reward 1 when the first part equals i % 2."""

    def __init__(self, num_envs: int = 4, seed: int = 0, length: int = 5, buf=None):
        self.single_action_space = spaces.MultiDiscrete([2, 3])
        super().__init__(num_envs=num_envs, seed=seed, length=length, buf=buf)
        self.single_action_space = spaces.MultiDiscrete([2, 3])

    def step(self, actions):
        return super().step(np.asarray(actions)[:, 0])


def multi_countdown(num_envs: int = 4, seed: int = 0):
    return MultiCountdownEnv(num_envs=num_envs, seed=seed)


class ReportingEnv(pufferlib.PufferEnv):
    """Reports the way PufferLib's C envs do: one-step episodes scoring 1 (reward 1 for action 1),
    summarised every ``report_every`` steps in one info dict without an ``env_index``:
    ``{"score": mean score, "n": episodes summarised}``."""

    def __init__(self, num_envs: int = 4, seed: int = 0, report_every: int = 8, buf=None):
        self.single_observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.single_action_space = spaces.Discrete(2)
        self.num_agents = num_envs
        super().__init__(buf)
        self.report_every, self.t, self.scores = report_every, 0, []

    def reset(self, seed=None):
        self.observations[:] = 0.0
        return self.observations, []

    def step(self, actions):
        self.t += 1
        self.rewards[:] = np.asarray(actions).reshape(-1) == 1
        self.terminals[:] = True
        self.truncations[:] = False
        self.scores += [1.0] * self.num_agents
        infos = []
        if self.t % self.report_every == 0:
            infos.append({"score": float(np.mean(self.scores)), "n": len(self.scores)})
            self.scores = []
        return self.observations, self.rewards, self.terminals, self.truncations, infos

    def close(self):
        pass


def reporting(num_envs: int = 4, seed: int = 0, report_every: int = 8):
    return ReportingEnv(num_envs=num_envs, seed=seed, report_every=report_every)


class ReachEnv(pufferlib.PufferEnv):
    """A continuous-control fixture. Env i has the target ``(i % 3 - 1) / 2`` (-0.5, 0 or 0.5) and
    observes it far off its natural scale, ``[1000 + 100 * target, t / length]``, as raw physical
    readings often are. Action: Box(-1, 1, (1,)); reward ``1 - |action - target|`` (``constant``:
    1 whatever the action); episodes of ``length`` steps end by truncation. ``actions_seen``: the
    actions of the last step, as the env received them."""

    def __init__(self, num_envs: int = 4, seed: int = 0, length: int = 8, constant: bool = False, buf=None):
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.num_agents = num_envs
        super().__init__(buf)
        self.length, self.constant = length, constant
        self.target = (np.arange(num_envs) % 3 - 1) / 2.0
        self.t = np.zeros(num_envs, dtype=np.int64)
        self.final_observations = np.zeros((num_envs, 2), dtype=np.float32)
        self.actions_seen = np.zeros((num_envs, 1), dtype=np.float32)

    def _write_obs(self):
        self.observations[:, 0] = 1000.0 + 100.0 * self.target
        self.observations[:, 1] = self.t / self.length

    def reset(self, seed=None):
        self.t[:] = 0
        self._write_obs()
        return self.observations, []

    def step(self, actions):
        self.actions_seen = np.array(actions, dtype=np.float32).reshape(self.num_agents, 1)
        self.t += 1
        error = np.abs(self.actions_seen[:, 0] - self.target)
        self.rewards[:] = 1.0 if self.constant else 1.0 - error
        done = self.t >= self.length
        self.terminals[:] = False
        self.truncations[:] = done
        self._write_obs()
        self.final_observations[done] = self.observations[done]
        self.t[done] = 0
        self._write_obs()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def get_state(self):  # a snapshot for exact resume (RolloutCollector.exact_state)
        return {"t": self.t.copy()}

    def set_state(self, state):
        self.t = np.array(state["t"], dtype=np.int64)
        self._write_obs()

    def close(self):
        pass


def reach(num_envs: int = 4, seed: int = 0):
    return ReachEnv(num_envs=num_envs, seed=seed)


def reach_constant(num_envs: int = 4, seed: int = 0):
    return ReachEnv(num_envs=num_envs, seed=seed, constant=True)


from gymnasium import Env  # noqa: E402  (appended with DictObsEnv)


class DictObsEnv(Env):
    """A Gymnasium env with a Dict observation, for structured observations (``--env
    training.envs.examples:dict_obs``): ``{"cue": Discrete(n_cues), "noise": Box(-1, 1,
    (noise_dim,))}``. Each step shows a fresh uniform cue; the action (Discrete(n_cues)) earns 1
    when it names the cue shown, else 0. Episodes end (terminate) after ``length`` steps, so the
    optimal return is ``length`` (8) and a uniform random policy's ``length / n_cues`` (1).

    PufferLib's emulation packs the two parts into bytes (an int32 cue, then the noise's float32
    bytes): read as floats, the cue is one small number among byte values up to 255, which
    saturate a tanh MLP's units. Decoded, with the cue one-hot (``training.encoders``), it is a
    lookup, learned in a few thousand steps."""

    def __init__(self, n_cues: int = 8, noise_dim: int = 8, length: int = 8):
        self.observation_space = spaces.Dict({"cue": spaces.Discrete(n_cues),
                                              "noise": spaces.Box(-1.0, 1.0, (noise_dim,), np.float32)})
        self.action_space = spaces.Discrete(n_cues)
        self.n_cues, self.noise_dim, self.length = n_cues, noise_dim, length
        self.t = 0
        self.cue = 0

    def _obs(self) -> dict:
        self.cue = int(self.np_random.integers(self.n_cues))
        return {"cue": self.cue, "noise": self.np_random.uniform(-1.0, 1.0, self.noise_dim).astype(np.float32)}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}


def dict_obs(n_cues: int = 8, noise_dim: int = 8, length: int = 8):
    """One ``DictObsEnv`` (a Gymnasium env: the trainer wraps it in PufferLib's emulation)."""
    return DictObsEnv(n_cues=n_cues, noise_dim=noise_dim, length=length)

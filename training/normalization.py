"""Running statistics for observation normalisation and reward scaling (the VecNormalize recipe
of openai/baselines, CleanRL's ``ppo_continuous_action.py`` and Stable-Baselines3), split the way
a distributed trainer needs it:

- ``Moments``: count, mean and variance of a batch, mergeable (Chan et al.'s parallel update), so
  each runner's rollout contributes its own moments and the learner merges them in any grouping
  with the same result as one pass over all the rows.
- ``ObsNormalizer``: a torch module of buffers in front of the policy. Its statistics are part of
  the agent's state, so they travel with the weights to the runners, into checkpoints, and to
  ``eval`` and replays, which normalise exactly as training did.
- ``RewardScaler``: the learner's per-env discounted return and its running variance; rewards are
  divided by that standard deviation for learning only (reported returns come from the runners,
  raw). Its state goes into the learner's checkpoint state, so a resume continues it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

EPSILON = 1e-8
CLIP = 10.0  # baselines' clipob and cliprew


@dataclass
class Moments:
    """Count, mean and (population) variance of some rows; ``mean``/``var`` have the row shape."""

    count: float
    mean: np.ndarray
    var: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, mask: np.ndarray | None = None) -> "Moments":
        """Moments of the rows of ``x`` (leading axes flattened to rows; ``mask`` with the leading
        shape keeps only the True rows), in float64."""
        rows = np.asarray(x, dtype=np.float64)
        if mask is not None:
            rows = rows[np.asarray(mask, bool)]
        rows = rows.reshape(-1, *np.shape(x)[np.ndim(mask) if mask is not None else 1:])
        if len(rows) == 0:
            shape = rows.shape[1:]
            return cls(0.0, np.zeros(shape), np.zeros(shape))
        return cls(float(len(rows)), rows.mean(axis=0), rows.var(axis=0))

    def merge(self, other: "Moments") -> "Moments":
        """The moments of both sets of rows together (exact, in any order or grouping)."""
        total = self.count + other.count
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / total)
        m2 = self.var * self.count + other.var * other.count + delta ** 2 * (self.count * other.count / total)
        return Moments(total, mean, m2 / total)


class ObsNormalizer(nn.Module):
    """clip((obs - mean) / sqrt(var + 1e-8), -10, 10), with the statistics as buffers (float64,
    so long runs do not lose the mean's precision). Starts as mean 0, variance 1: the identity up
    to the clip, until the learner merges the first rollouts' moments."""

    def __init__(self, shape, clip: float = CLIP):
        super().__init__()
        self.clip = float(clip)
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(tuple(shape), dtype=torch.float64))
        self.register_buffer("var", torch.ones(tuple(shape), dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.var + EPSILON).float()
        return ((obs.float() - self.mean.float()) * scale).clamp(-self.clip, self.clip)

    def moments(self) -> Moments:
        return Moments(float(self.count), self.mean.cpu().numpy(), self.var.cpu().numpy())

    @torch.no_grad()
    def update(self, batch: Moments) -> None:
        merged = self.moments().merge(batch)
        self.count.fill_(merged.count)
        self.mean.copy_(torch.from_numpy(np.asarray(merged.mean, np.float64)))
        self.var.copy_(torch.from_numpy(np.asarray(merged.var, np.float64)))


class RewardScaler:
    """Rewards divided by the running standard deviation of the discounted return, then clipped to
    +-10 (baselines' VecNormalize). ``returns`` holds each env's discounted return so far; an
    episode's end zeroes it. Rows marked invalid (an emulated env's reset step) add nothing."""

    def __init__(self, gamma: float, clip: float = CLIP):
        self.gamma = float(gamma)
        self.clip = float(clip)
        self.returns: np.ndarray | None = None  # (N,), sized by the first batch
        self.stats = Moments(0.0, np.zeros(()), np.ones(()))

    def scale(self, rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Scaled rewards (T, N) for one round, after adding the round's returns to the statistics
        (each step's return is one sample, as VecNormalize counts them)."""
        T, N = rewards.shape
        if self.returns is None or len(self.returns) != N:
            self.returns = np.zeros(N, dtype=np.float64)
        seen = np.empty((T, N), dtype=np.float64)
        for t in range(T):
            self.returns = np.where(valid[t], self.returns * self.gamma + rewards[t], self.returns)
            seen[t] = self.returns
            self.returns[dones[t]] = 0.0
        self.stats = self.stats.merge(Moments.of(seen, valid))
        scaled = rewards / np.sqrt(self.stats.var + EPSILON)
        return np.clip(scaled, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return dict(returns=None if self.returns is None else self.returns.copy(), count=self.stats.count,
                    mean=float(self.stats.mean), var=float(self.stats.var))

    def load_state_dict(self, state: dict) -> None:
        self.returns = None if state["returns"] is None else np.array(state["returns"], dtype=np.float64)
        self.stats = Moments(float(state["count"]), np.asarray(state["mean"], np.float64),
                             np.asarray(state["var"], np.float64))

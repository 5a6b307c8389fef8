"""Prefetch of future worlds, so graph generation runs in large batches.

Generating a graph costs ~60 small NumPy calls per edge attempt whatever the batch size, so
generating the 10-40 worlds that random play needs each step, one step at a time, would cost
more than the rest of the step. A world depends only on its episode seed, and every env's
future seeds are known (its seed chain), so each env keeps up to `depth` future worlds queued
and the queue is topped up for all envs at once when it runs low. Exactness is unaffected:
the world an env gets is the same whenever it was generated.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .consts import Rules
from .rng import U64, episode_key, next_episode_seed
from .world import Worlds, generate_worlds

_FIELDS = [f.name for f in dataclasses.fields(Worlds)]


class WorldQueue:
    def __init__(self, rules: Rules, n: int, depth: int = 2, refill_fraction: float = 0.25):
        self.r, self.N, self.D = rules, n, depth
        self.refill_at = max(1, int(n * refill_fraction))
        self.store = None
        self.seeds = np.zeros((depth, n), U64)
        self.head = np.zeros(n, np.int64)
        self.count = np.zeros(n, np.int64)
        self.tail = np.zeros(n, U64)  # seed of the newest queued episode (or the current one)

    def clear(self, current_seeds: np.ndarray) -> None:
        self.count[:] = 0
        self.head[:] = 0
        self.tail[:] = current_seeds

    def pop(self, idx: np.ndarray):
        """(seeds, Worlds) of the next episode of each env in idx."""
        if (self.count[idx] == 0).any() or (self.count < self.D).sum() >= self.refill_at:
            self._refill()
        slot = self.head[idx]
        w = Worlds(**{f: self.store[f][slot, idx] for f in _FIELDS})
        seeds = self.seeds[slot, idx]
        self.head[idx] = (slot + 1) % self.D
        self.count[idx] -= 1
        return seeds, w

    def _refill(self) -> None:
        """Fill every env's missing slots with one generation call (the call's fixed cost is
        the expensive part)."""
        envs, seeds, pos = [], [], []
        tail = self.tail.copy()
        for level in range(self.D):
            sel = np.flatnonzero(self.count + level < self.D)
            if not sel.size:
                break
            tail[sel] = next_episode_seed(tail[sel])
            envs.append(sel)
            seeds.append(tail[sel])
            pos.append((self.head[sel] + self.count[sel] + level) % self.D)
        if not envs:
            return
        envs, seeds, pos = np.concatenate(envs), np.concatenate(seeds), np.concatenate(pos)
        w = generate_worlds(self.r, episode_key(seeds))
        if self.store is None:
            self.store = {f: np.zeros((self.D, self.N) + getattr(w, f).shape[1:],
                                      getattr(w, f).dtype) for f in _FIELDS}
        for f in _FIELDS:
            self.store[f][pos, envs] = getattr(w, f)
        self.seeds[pos, envs] = seeds
        self.tail = tail
        self.count[:] = self.D

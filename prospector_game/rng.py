"""Counter-based random numbers for the vectorized simulator.

Why not the spec's PCG32 stream per env: a sequential stream forces every draw to be consumed in
a fixed order, one env at a time, so vectorized world generation and per-step draws for only the
envs that need them would need masked advances of thousands of streams. Instead every random
word is a hash of (episode key, site, word index):

* an episode key is SplitMix64 of the episode seed; the next episode's seed is SplitMix64 of the
  current one, so an env's sequence of worlds depends only on its own first seed;
* a "site" is one place that draws: (key, domain, counter), e.g. (key, STEP, decision index) or
  (key, ASTEROIDS, node index). SplitMix64 of the site gives a 64-bit base (lo, hi);
* word j of a site is lowbias32(lo + j * golden32) ^ hi. Different purposes within a site use
  disjoint word ranges, so adding or skipping a draw never shifts any other draw.

Consequence: env i's trajectory is a pure function of its seed and its actions, independent of
batch size, batch position or the other envs. All arithmetic is elementwise (no reductions with
size-dependent summation order), so results are bit-identical for any batch size.
"""

from __future__ import annotations

import numpy as np

U64 = np.uint64
U32 = np.uint32
_GOLDEN64 = U64(0x9E3779B97F4A7C15)
_M1 = U64(0xBF58476D1CE4E5B9)
_M2 = U64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = U64(30), U64(27), U64(31), U64(32)
_MASK32 = U64(0xFFFFFFFF)
_GOLDEN32 = U32(0x9E3779B9)
_H1, _H2 = U32(0x7FEB352D), U32(0x846CA68B)
_S16, _S15 = U32(16), U32(15)
_INV32 = 1.0 / 4294967296.0
_INV24 = np.float32(1.0 / 16777216.0)
_S8 = U32(8)
_TWO_PI = 2.0 * np.pi

# Domains: which kind of site a base belongs to. Distinct odd multipliers keep sites apart.
D_STEP = 1
D_WORLD = 2
D_ASTEROIDS = 3
_DOMAIN_MULT = U64(0xD1B54A32D192ED03)
_COUNTER_MULT = U64(0xA0761D6478BD642F)
_KEY_SALT = U64(0x2545F4914F6CDD1D)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 step + finalizer on a uint64 array (returns a new array)."""
    z = np.asarray(x, dtype=U64) + _GOLDEN64
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def to_seed64(seed) -> np.uint64:
    """Any Python int (negative or huge included) to a uint64 seed, mod 2**64."""
    return U64(int(seed) & 0xFFFFFFFFFFFFFFFF)


def next_episode_seed(seeds: np.ndarray) -> np.ndarray:
    return splitmix64(seeds)


def episode_key(seeds: np.ndarray) -> np.ndarray:
    return splitmix64(np.asarray(seeds, dtype=U64) ^ _KEY_SALT)


def hash32(x: np.ndarray) -> np.ndarray:
    """lowbias32 (Wellons), in place on a fresh uint32 array."""
    x ^= x >> _S16
    x *= _H1
    x ^= x >> _S15
    x *= _H2
    x ^= x >> _S16
    return x


class Site:
    """Random words for a set of envs at one (domain, counter) site; shape (k, m) per request."""

    __slots__ = ("lo", "hi")

    def __init__(self, keys: np.ndarray, domain: int, counter):
        c = np.atleast_1d(np.asarray(counter).astype(U64))
        dom = U64((domain * int(_DOMAIN_MULT)) & 0xFFFFFFFFFFFFFFFF)
        base = splitmix64(keys + (c * _COUNTER_MULT + dom))
        self.lo = (base & _MASK32).astype(U32)
        self.hi = (base >> _S32).astype(U32)

    def take(self, idx) -> "Site":
        s = Site.__new__(Site)
        s.lo = self.lo[idx]
        s.hi = self.hi[idx]
        return s

    def words(self, j0: int, m: int) -> np.ndarray:
        j = np.arange(j0, j0 + m, dtype=U32) * _GOLDEN32
        x = self.lo[:, None] + j[None, :]
        hash32(x)
        x ^= self.hi[:, None]
        return x

    def uniform(self, j0: int, m: int) -> np.ndarray:
        """(k, m) float64 in [0, 1)."""
        return self.words(j0, m).astype(np.float64) * _INV32

    def uniform32(self, j0: int, m: int) -> np.ndarray:
        """(k, m) float32 in [0, 1) with 24-bit resolution (half the memory traffic; enough
        for world generation and noise terms)."""
        w = self.words(j0, m)
        w >>= _S8
        return w.astype(np.float32) * _INV24

    def normal(self, j0: int, m: int) -> np.ndarray:
        """(k, m) standard normals via Box-Muller (both branches); uses 2*ceil(m/2) words."""
        h = (m + 1) // 2
        u = self.uniform(j0, 2 * h)
        return box_muller(u[:, :h], u[:, h:])[:, :m]

    def exponential(self, j0: int, m: int) -> np.ndarray:
        return -np.log(np.maximum(self.uniform(j0, m), 1e-8))


def box_muller(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Two uniform arrays of shape (..., h) -> normals of shape (..., 2h).

    Evaluated in float32: float64 sin/cos in NumPy fall back to scalar libm and cost ~10x more,
    and a noise term does not need more than float32 resolution.
    """
    u1 = np.maximum(u1.astype(np.float32, copy=False), np.float32(1e-8))
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    ang = u2.astype(np.float32) * np.float32(_TWO_PI)
    return np.concatenate((r * np.cos(ang), r * np.sin(ang)), axis=-1)


def popcount_normals(words: np.ndarray) -> np.ndarray:
    """Approximate standard normals from 32-bit words: (popcount - 16) / sqrt(8) is a
    standardized Binomial(32, 1/2) (mean 0, sd 1, 33 levels, |z| <= 5.7). One cheap op per
    value instead of Box-Muller's logs and trig; used for the per-step market noise, which is
    drawn for every env every step."""
    return (np.bitwise_count(words).astype(np.float32) - np.float32(16.0)) * np.float32(
        0.35355339059327373)


def normals_from_uniforms(u: np.ndarray) -> np.ndarray:
    """(k, 2h) uniforms -> (k, 2h) normals."""
    h = u.shape[-1] // 2
    return box_muller(u[..., :h], u[..., h:])

"""Scripted baseline policies (rules section 10), vectorized over a batch of observations.

Each bot maps obs (B, 260) -> actions (B,) int64 using only the observation. Decisions are
written as a priority chain with `np.where`: the earliest rule that fires wins, which is how the
section-10 prose reads ("if ... else if ..."). All bots accept an optional `rng` argument so they
share one signature; only "random" uses it.
"""

from __future__ import annotations

import functools

import numpy as np

from .consts import (
    A_CASH_OUT, A_COOLDOWN, A_DEEP, A_FUEL_L, A_FUEL_M, A_HOLD, A_KIT, A_MINE0, A_SELECT0,
    A_SELL0, A_STABILIZE, A_WIDE, CREDITS_CAP, MAX_ASTEROIDS, MAX_NEIGHBORS, N_ACTIONS,
    OBS_AST0, OBS_AT_STATION, OBS_CARGO0, OBS_CREDITS, OBS_DPRICE0, OBS_KITS, OBS_NB0, OBS_PRICE0,
    OBS_STABS, get_rules,
)
from .rng import hash32

_LOG_CREDITS = np.log1p(CREDITS_CAP)
_NONE = -1


class _View:
    """Named slices of an observation batch."""

    def __init__(self, obs: np.ndarray):
        o = np.asarray(obs, dtype=np.float32)
        self.o = o
        self.B = o.shape[0]
        self.fuel, self.hull, self.heat, self.tool = o[:, 0], o[:, 1], o[:, 2], o[:, 3]
        self.cargo, self.time = o[:, 4], o[:, 6]
        self.credits = np.expm1(o[:, OBS_CREDITS].astype(np.float64) * _LOG_CREDITS)
        self.cargo_c = o[:, OBS_CARGO0:OBS_CARGO0 + 6]
        self.kits, self.stabs = o[:, OBS_KITS], o[:, OBS_STABS]
        self.at_station = o[:, OBS_AT_STATION] > 0.5
        self.nb = o[:, OBS_NB0:OBS_NB0 + 42].reshape(self.B, MAX_NEIGHBORS, 7)
        self.ast = o[:, OBS_AST0:OBS_AST0 + 176].reshape(self.B, MAX_ASTEROIDS, 11)
        self.price = o[:, OBS_PRICE0:OBS_PRICE0 + 6]
        self.dprice = o[:, OBS_DPRICE0:OBS_DPRICE0 + 6]


def _first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along the last axis, or -1."""
    return np.where(mask.any(axis=-1), mask.argmax(axis=-1), _NONE)


def _or(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, a, b)


def station_slot(v: _View) -> np.ndarray:
    return _first((v.nb[..., 0] > 0.5) & (v.nb[..., 1] > 0.5))


def field_slot(v: _View) -> np.ndarray:
    valid = v.nb[..., 0] > 0.5
    return _or(_first(valid & (v.nb[..., 2] > 0.5)),
               _or(_first(valid & (v.nb[..., 1] < 0.5)), _first(valid)))


def retreat_slot(v: _View) -> np.ndarray:
    """Station neighbour, else the first valid neighbour, else -1."""
    return _or(station_slot(v), _first(v.nb[..., 0] > 0.5))


def best_asteroid(v: _View, target=None) -> np.ndarray:
    a = v.ast
    comp, stab, depl, conf = a[..., 1:7], a[..., 7], a[..., 8], a[..., 9]
    if target is None:
        value = (comp * v.price[:, None, :]).sum(axis=-1)
    else:
        value = comp[..., target] * (0.5 + 0.5 * conf)
    score = value * stab * (1.0 - depl)
    ok = (a[..., 0] > 0.5) & (depl < 1.0)
    score = np.where(ok, score, -np.inf)
    return np.where(ok.any(axis=1), score.argmax(axis=1), _NONE)


def _travel_or_hold(slot: np.ndarray) -> np.ndarray:
    return np.where(slot >= 0, slot, A_HOLD)


def _sell_first(v: _View, bucket: int, threshold: float = 0.01, skip=None) -> np.ndarray:
    held = v.cargo_c > threshold
    if skip is not None:
        held[:, skip] = False
    c = _first(held)
    return np.where(c >= 0, A_SELL0 + 3 * c + bucket, _NONE)


def _mine_chain(v: _View, best: np.ndarray, mine_action: np.ndarray) -> np.ndarray:
    """Shared tail: no asteroid -> go to a field neighbour; not selected -> select; else mine."""
    rows = np.arange(v.B)
    b = np.maximum(best, 0)
    selected = v.ast[rows, b, 10] > 0.5
    act = np.where(selected, mine_action, A_SELECT0 + b)
    return np.where(best >= 0, act, _travel_or_hold(field_slot(v)))


def _pick(*pairs, default):
    """Priority chain: pairs of (condition, action); the first true condition wins."""
    out = np.asarray(default)
    for cond, action in reversed(pairs):
        out = np.where(cond, action, out)
    return out.astype(np.int64)


def greedy_miner(obs, rng=None) -> np.ndarray:
    v = _View(obs)
    sell = _sell_first(v, 2)
    station = _pick(
        (sell >= 0, sell),
        ((v.fuel < 0.40) & (v.credits >= 210.0), A_FUEL_L),
        default=_travel_or_hold(field_slot(v)),
    )
    best = best_asteroid(v)
    mine = np.where((v.tool > 0.60) & (v.heat < 0.60), A_MINE0 + 2, A_MINE0 + 1)
    retreat = (v.cargo > 0.85) | (v.heat > 0.80) | (v.hull < 0.40) | (v.fuel < 0.15)
    field = _pick((retreat, _travel_or_hold(retreat_slot(v))), default=_mine_chain(v, best, mine))
    return np.where(v.at_station, station, field).astype(np.int64)


def cautious_scanner(obs, rng=None) -> np.ndarray:
    v = _View(obs)
    rows = np.arange(v.B)
    sell = _sell_first(v, 1)
    station = _pick(
        (sell >= 0, sell),
        ((v.kits < 0.30) & (v.credits >= 150.0), A_KIT),
        ((v.fuel < 0.50) & (v.credits >= 120.0), A_FUEL_M),
        default=_travel_or_hold(field_slot(v)),
    )
    valid = v.ast[..., 0] > 0.5
    nvalid = valid.sum(axis=1)
    mean_conf = np.where(valid, v.ast[..., 9], 0.0).sum(axis=1) / np.maximum(nvalid, 1)
    best = best_asteroid(v)
    b = np.maximum(best, 0)
    conf, stab = v.ast[rows, b, 9], v.ast[rows, b, 7]
    selected = v.ast[rows, b, 10] > 0.5
    mine = _pick(
        (conf < 0.60, A_DEEP),
        ((stab < 0.40) & (v.stabs > 0.10), A_STABILIZE),
        (v.heat > 0.70, A_COOLDOWN),
        default=A_MINE0,
    )
    tail = np.where(selected, mine, A_SELECT0 + b)
    tail = np.where(best >= 0, tail, _travel_or_hold(field_slot(v)))
    retreat = (v.cargo > 0.70) | (v.heat > 0.75) | (v.hull < 0.55) | (v.fuel < 0.20)
    field = _pick(
        (retreat, _travel_or_hold(retreat_slot(v))),
        ((nvalid > 0) & (mean_conf < 0.35), A_WIDE),
        default=tail,
    )
    return np.where(v.at_station, station, field).astype(np.int64)


def market_timer(obs, rng=None, target: int = 3, rules="v2") -> np.ndarray:
    """Section-10 market timer. Its thresholds were written for v1's price encoding
    (price/base capped at 1, delta/100); under v2 (price/max, delta/base) they are converted so
    they test the same prices. v2 also removes a dead loop: in v1, once the hold carries more
    than 12% (or 25% with prices falling) cargo the bot shuttles between field and station
    without mining, because it sells non-target goods only when the hold is over 70% full, and
    it strands. In v2 it sells non-target goods on arrival (it times only its target) and the
    field "go sell" trigger counts target cargo."""
    r = get_rules(rules)
    v = _View(obs)
    forced = (v.cargo > 0.70) | (v.time < 0.15)
    if r.price_obs_over_max:
        hi_price = 0.50 * r.price_base[target] / r.price_max[target]
        d_scale = 100.0 / r.price_base[target]
        ferry_cargo = v.cargo_c[:, target]
        sell_others = np.ones(v.B, bool)
    else:
        hi_price, d_scale, ferry_cargo = 0.50, 1.0, v.cargo
        sell_others = forced
    held = v.cargo_c[:, target] > 0.01
    rising = (v.dprice[:, target] > 0.01 * d_scale) & (v.price[:, target] > hi_price)
    other = _sell_first(v, 0, threshold=0.05, skip=target)
    station = _pick(
        (held & (rising | forced), A_SELL0 + 3 * target),
        (sell_others & (other >= 0), other),
        ((v.fuel < 0.50) & (v.credits >= 120.0), A_FUEL_M),
        default=_travel_or_hold(field_slot(v)),
    )
    st = station_slot(v)
    retreat = _travel_or_hold(retreat_slot(v))
    best = best_asteroid(v, target=target)
    mine = np.where(v.heat < 0.60, A_MINE0 + 1, A_MINE0)
    loaded = ferry_cargo > 0.12
    falling = (v.dprice[:, target] < -0.02 * d_scale) & (v.cargo > 0.25)
    full = (v.cargo > 0.85) | (v.heat > 0.80)
    field = _pick(
        (loaded & (v.heat > 0.65), A_COOLDOWN),
        (loaded & (st >= 0), st),
        (falling, np.where(v.heat > 0.60, A_COOLDOWN, retreat)),
        (full, np.where(v.heat > 0.70, A_COOLDOWN, retreat)),
        default=_mine_chain(v, best, mine),
    )
    return np.where(v.at_station, station, field).astype(np.int64)


def random_bot(obs, rng=None) -> np.ndarray:
    """Uniform over 0..68. With no rng, the draw is a hash of each observation row, so the same
    observations always give the same actions (no hidden global state)."""
    o = np.asarray(obs, dtype=np.float32)
    if rng is not None:
        return rng.integers(0, N_ACTIONS, o.shape[0]).astype(np.int64)
    bits = np.ascontiguousarray(o).view(np.uint32)
    salt = np.arange(bits.shape[1], dtype=np.uint32) * np.uint32(0x9E3779B9)
    # wrapping uint32 addition is associative, so the row sum is exact in any order
    acc = hash32(bits + salt[None, :]).sum(axis=1, dtype=np.uint32)
    return (hash32(acc) % np.uint32(N_ACTIONS)).astype(np.int64)


def hold_bot(obs, rng=None) -> np.ndarray:
    return np.full(np.asarray(obs).shape[0], A_HOLD, np.int64)


def cash_out_bot(obs, rng=None) -> np.ndarray:
    return np.full(np.asarray(obs).shape[0], A_CASH_OUT, np.int64)


def make_bots(rules="v2") -> dict:
    """The bot table for a rule set (only the market timer reads the rules)."""
    name = get_rules(rules).name
    return {
        "greedy_miner": greedy_miner,
        "cautious_scanner": cautious_scanner,
        "market_timer": functools.partial(market_timer, rules=name),
        "random": random_bot,
        "hold": hold_bot,
        "cash_out": cash_out_bot,
    }


BOTS = make_bots("v2")
market_timer_v1 = functools.partial(market_timer, rules="v1")  # as a behaviour: prospector_game.bots:market_timer_v1

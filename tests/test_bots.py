"""Scripted bots (rules section 10), the evaluation harness and the v2 balance criteria."""

import numpy as np
import pytest

from prospector_game.bot_eval import evaluate_bots, evaluate_policies
from prospector_game.bots import BOTS, make_bots
from prospector_game.env import ProspectorEnv
from prospector_game.consts import CREDITS_CAP, OBS_DIM

BOT_NAMES = ["greedy_miner", "cautious_scanner", "market_timer"]


@pytest.fixture(scope="module")
def real_obs():
    """A few thousand observations from random play (station and field states)."""
    env = ProspectorEnv(num_envs=64, seed=3)
    env.reset()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(60):
        obs, *_ = env.step(rng.integers(0, 69, 64))
        rows.append(obs.copy())
    return np.concatenate(rows)


def blank(station=True):
    o = np.zeros((1, OBS_DIM), np.float32)
    o[0, [0, 1, 3]] = 1.0  # fuel, hull, tool
    o[0, 6] = 1.0
    o[0, 244:250] = 0.5
    if station:
        o[0, 17] = o[0, 19] = 1.0
    else:
        o[0, 20] = 1.0
    return o


def set_nb(o, slot, kind):  # kind 0 station, 1 cluster, 2 hazard
    o[0, 24 + 7 * slot] = 1.0
    o[0, 24 + 7 * slot + 1 + kind] = 1.0


def set_ast(o, slot, comp, stab=0.5, depl=0.0, conf=0.1, selected=False):
    b = 68 + 11 * slot
    o[0, b] = 1.0
    o[0, b + 1:b + 7] = comp
    o[0, b + 7], o[0, b + 8], o[0, b + 9] = stab, depl, conf
    o[0, b + 10] = float(selected)


def credits_obs(c):
    return np.log1p(c) / np.log1p(CREDITS_CAP)


@pytest.mark.parametrize("name", list(BOTS))
def test_bot_output_contract(name, real_obs):
    a = BOTS[name](real_obs)
    assert a.shape == (len(real_obs),) and a.dtype == np.int64
    assert a.min() >= 0 and a.max() <= 68
    np.testing.assert_array_equal(a, BOTS[name](real_obs.copy()))  # deterministic
    single = np.array([BOTS[name](real_obs[i:i + 1])[0] for i in range(0, len(real_obs), 97)])
    np.testing.assert_array_equal(a[::97], single)  # row i does not depend on other rows


def test_hold_cash_out_and_random(real_obs):
    assert np.all(BOTS["hold"](real_obs) == 6)
    assert np.all(BOTS["cash_out"](real_obs) == 68)
    a = BOTS["random"](real_obs)
    assert len(np.unique(a)) == 69  # covers the whole action space
    counts = np.bincount(a, minlength=69)
    assert counts.min() > 0.4 * len(a) / 69
    rng_a = BOTS["random"](real_obs, rng=np.random.default_rng(1))
    rng_b = BOTS["random"](real_obs, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(rng_a, rng_b)


def test_greedy_miner_decisions():
    g = BOTS["greedy_miner"]
    o = blank()
    o[0, 8 + 2] = 0.1
    assert g(o)[0] == 43 + 3 * 2 + 2  # sell 100% of the first commodity held
    o = blank()
    o[0, 0], o[0, 7] = 0.3, credits_obs(300)
    assert g(o)[0] == 63  # large fuel
    o = blank()
    set_nb(o, 0, 2)
    set_nb(o, 1, 1)
    assert g(o)[0] == 1  # leave for the first cluster neighbour
    o = blank(station=False)
    set_nb(o, 0, 1)
    set_nb(o, 2, 0)
    o[0, 2] = 0.9
    assert g(o)[0] == 2  # too hot: head for the station neighbour
    o = blank(station=False)
    o[0, 244:250] = [0.1, 0.1, 0.1, 0.9, 0.1, 0.1]
    set_ast(o, 0, [1, 0, 0, 0, 0, 0])
    set_ast(o, 1, [0, 0, 0, 1, 0, 0])
    assert g(o)[0] == 12 + 1  # select the most valuable asteroid first
    set_ast(o, 1, [0, 0, 0, 1, 0, 0], selected=True)
    assert g(o)[0] == 30  # fresh tool, cool: aggressive
    o[0, 3] = 0.5
    assert g(o)[0] == 29


def test_cautious_scanner_decisions():
    c = BOTS["cautious_scanner"]
    o = blank()
    o[0, 8] = 0.2
    assert c(o)[0] == 43 + 1  # sells in 50% buckets
    o = blank()
    o[0, 7] = credits_obs(200)
    assert c(o)[0] == 64  # few repair kits
    o = blank(station=False)
    set_ast(o, 0, [0, 0, 0, 1, 0, 0], conf=0.1)
    assert c(o)[0] == 8  # low mean confidence: wide scan
    set_ast(o, 0, [0, 0, 0, 1, 0, 0], conf=0.5)
    assert c(o)[0] == 12
    set_ast(o, 0, [0, 0, 0, 1, 0, 0], conf=0.5, selected=True)
    assert c(o)[0] == 10  # deep scan the selection
    set_ast(o, 0, [0, 0, 0, 1, 0, 0], conf=0.7, stab=0.3, selected=True)
    o[0, 15] = 2 / 12
    assert c(o)[0] == 31
    o[0, 15] = 1 / 12
    o[0, 2] = 0.72
    assert c(o)[0] == 33
    o[0, 2] = 0.1
    assert c(o)[0] == 28


def test_market_timer_price_thresholds_follow_the_encoding():
    o = blank()
    o[0, 8 + 3] = 0.2
    o[0, 244 + 3] = 0.3  # v2: above half the base price (0.227); v1: below 0.5
    o[0, 250 + 3] = 0.008  # v2: rising by more than 0.01*100/145; v1: less than 0.01
    assert make_bots("v2")["market_timer"](o)[0] == 43 + 9
    assert make_bots("v1")["market_timer"](o)[0] != 43 + 9
    o[0, 4] = 0.8  # forced liquidation sells the target whatever the price
    assert make_bots("v1")["market_timer"](o)[0] == 43 + 9


def test_evaluate_bots_structure_and_determinism():
    a = evaluate_bots(["greedy_miner", "hold"], episodes=6, seed0=5, time_max=300)
    b = evaluate_bots(["greedy_miner", "hold"], episodes=6, seed0=5, time_max=300)
    assert a == b
    m = a["hold"]
    assert m["return_mean"] == pytest.approx(-0.3) and m["survival_rate"] == 1.0
    assert m["endings"] == {"destroyed": 0, "stranded": 0, "cashed_out": 0, "time_limit": 6}
    for k in ("return_mean", "return_median", "survival_rate", "net_profit_mean",
              "profit_per_tick_mean", "ticks_mean", "endings"):
        assert k in a["greedy_miner"]
    with pytest.raises(ValueError):
        evaluate_bots(["nope"])


def test_policy_evaluation_is_batch_independent():
    """A bot evaluated alone and next to other policies gives the same per-seed results."""
    alone = evaluate_policies({"g": BOTS["greedy_miner"]}, episodes=5, seed0=11, time_max=400)
    mixed = evaluate_policies({"r": BOTS["random"], "g": BOTS["greedy_miner"]}, episodes=5,
                              seed0=11, time_max=400)
    assert alone["g"] == mixed["g"]


def test_v1_bots_lose_to_cash_out():
    """The v1 defect section 0 describes: every scripted bot dies early and scores below an
    immediate cash-out."""
    res = evaluate_bots(BOT_NAMES + ["cash_out"], episodes=40, seed0=7, rules="v1")
    for name in BOT_NAMES:
        assert res[name]["survival_rate"] < 0.1
        assert res[name]["return_mean"] < res["cash_out"]["return_mean"] - 50


@pytest.mark.slow
def test_v2_balance_criteria():
    """Section 0.1 on 200 seeded episodes (seeds 0..199, time_max 20000)."""
    res = evaluate_bots(list(BOTS), episodes=200, seed0=0, rules="v2", time_max=20000)
    for name in ("greedy_miner", "cautious_scanner"):
        assert res[name]["survival_rate"] >= 0.5, (name, res[name])
        assert res[name]["return_mean"] > 5.0, (name, res[name])
    worst_bot = min(res[n]["return_mean"] for n in BOT_NAMES)
    for name in ("cash_out", "hold", "random"):
        assert res[name]["return_mean"] < worst_bot, (name, res[name], worst_bot)
    assert res["hold"]["endings"]["time_limit"] == 200  # truncation, never termination

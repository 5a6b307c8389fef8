"""Each action group and each dynamic rule checked against the rules text (sections 5-8 and the
v2 changes), with expected values computed by hand from the state the test sets up."""

import numpy as np
import pytest

from prospector_game.env import ProspectorEnv
from prospector_game.consts import (
    A_BURN, A_CASH_OUT, A_COOLDOWN, A_DEEP, A_DOCK, A_FOCUSED, A_FUEL_L, A_FUEL_S, A_HOLD, A_KIT,
    A_LISTEN, A_MINE0, A_OVERHAUL, A_PATCH, A_REFINE, A_SELECT0, A_SELL0, A_STABILIZE, A_TOOL,
    A_WIDE, get_rules,
)
from prospector_game.obs import build_obs

# switch off the random hazards a test is not about
QUIET = dict(pirate_bias=-60.0, market_noise=0.0, fracture_base=-60.0, mine_sigma=(0.0,) * 3)


def make(rules="v2", n=1, seed=0, time_max=20000, **over):
    r = get_rules(rules).replace(**{**QUIET, **over})
    env = ProspectorEnv(num_envs=n, seed=seed, rules=r, time_max=time_max)
    env.reset()
    return env


def goto_field(env, hazard=0.0, pirate=0.0):
    """Put env 0 at the station's first cluster neighbour, with the given node levels."""
    s = env.sim
    nb = s.nbr[0, 0]
    dest = int(next(x for x in nb if x >= 0 and s.node_type[0, x] == 1))
    s.hazard[0, dest], s.pirate[0, dest] = hazard, pirate
    s.move_to(np.array([0]), np.array([dest]))
    s.refresh_neighbours(np.array([0]))
    s._nb_dirty = []
    build_obs(s, env.observations)
    return dest


def step(env, a):
    obs, r, te, tr, infos = env.step(np.array([a]))
    return float(r[0]), bool(te[0]), bool(tr[0]), infos


def snap(s):
    return {k: getattr(s, k)[0].copy() for k in ("fuel", "hull", "heat", "tool", "alert",
                                                  "credits", "cargo", "ticks", "time_remaining")}


def test_hold_at_station_v2_and_v1():
    for rules, decay in (("v2", 1.0), ("v1", 0.0)):
        env = make(rules)
        s = env.sim
        s.alert[0], s.heat[0] = 10.0, 50.0
        r, te, tr, _ = step(env, A_HOLD)
        assert s.alert[0] == pytest.approx(10 - 3 - decay)
        assert s.heat[0] == pytest.approx(45.0)  # -2.5 hold, -2.5 dissipation
        assert r == pytest.approx(-0.001, abs=1e-9) and not te and not tr
        assert s.ticks[0] == 1 and s.time_remaining[0] == 19999


def test_travel_costs_time_fuel_and_exposure():
    env = make(hazard_hull=0.5)
    s = env.sim
    s.cargo[0, 0] = 40.0
    s.heat[0], s.alert[0] = 20.0, 30.0
    e = int(s.slot_edge[0, 0, 0])
    dest = int(s.nbr[0, 0, 0])
    d, th = int(s.edge_time[0, e]), s.edge_threat[0, e]
    hz = s.hazard[0, dest]
    before = snap(s)
    step(env, 0)
    assert s.node[0] == dest and s.sel[0] == -1
    assert s.ticks[0] == d and s.time_remaining[0] == 20000 - d
    assert s.fuel[0] == pytest.approx(before["fuel"] - s.edge_fuel[0, e] * (1 + 0.5 * 40 / 200))
    heat = max(0.0, 20 + d * th * 0.5 - 2.5 * d) + d * hz * 0.5
    alert = max(0.0, 30 + d * th * 0.8 - 1.0 * d) + d * hz * 0.8
    assert s.heat[0] == pytest.approx(min(100.0, heat))
    assert s.alert[0] == pytest.approx(min(100.0, alert))
    lo = d * max(0, th - 0.35) * 0.5 * 0.85 + d * max(0, hz - 0.35) * 0.5 * 0.8
    hi = d * max(0, th - 0.35) * 0.5 * 1.15 + d * max(0, hz - 0.35) * 0.5 * 1.2
    assert 100 - hi - 1e-9 <= s.hull[0] <= 100 - lo + 1e-9


def test_travel_to_empty_slot_is_invalid_hold():
    env = next(e for e in (make(seed=k) for k in range(50)) if (e.sim.nbr[0, 0] < 0).any())
    s = env.sim
    slot = int(np.flatnonzero(s.nbr[0, 0] < 0)[0])
    r, *_ = step(env, slot)
    assert s.node[0] == 0 and s.last_invalid[0] and s.last_action[0] == A_HOLD
    assert s.ticks[0] == 1 and r == pytest.approx(-0.011)


def test_wide_scan_updates_existing_asteroids_only():
    env = make()
    goto_field(env)
    s = env.sim
    ao0 = s.ast_obs[0].copy()
    count = int((ao0[:, 0] > 0).sum())
    fuel0, alert0 = s.fuel[0], s.alert[0]
    r, *_ = step(env, A_WIDE)
    ao = s.ast_obs[0]
    assert s.ticks[0] == 3 and s.scan_count[0] == 1
    assert s.fuel[0] == pytest.approx(fuel0 - 5)
    assert s.alert[0] == pytest.approx(max(0, alert0 + 4 - 3))
    np.testing.assert_allclose(ao[:count, 9], 0.2, atol=1e-6)  # 0.10 + 0.10
    np.testing.assert_allclose(ao[:count, 1:7].sum(1), 1.0, atol=1e-5)
    assert not np.allclose(ao[:count, 1:7], ao0[:count, 1:7])
    assert np.all(ao[count:] == 0)
    assert r == pytest.approx(-0.005 - 0.003 - 0.1 * 5 / 100, abs=1e-6)


@pytest.mark.parametrize("rules", ["v1", "v2"])
def test_targeted_scan_without_selection_is_invalid(rules):
    env = make(rules)
    goto_field(env)
    s = env.sim
    fuel0, alert0 = s.fuel[0], s.alert[0] + 5.0
    s.alert[0] = alert0
    step(env, A_FOCUSED)
    assert s.last_invalid[0] and s.ticks[0] == 1
    if rules == "v2":  # an invalid scan costs nothing
        assert s.fuel[0] == fuel0
        assert s.alert[0] == pytest.approx(alert0 - 3 - 1)
    else:  # v1 charges before checking
        assert s.fuel[0] == fuel0 - 4
        assert s.alert[0] == pytest.approx(alert0 + 3 - 3)


def test_select_then_deep_scan_selected_only():
    env = make()
    goto_field(env)
    s = env.sim
    count = int(s.st_count[0, s.node[0]])
    step(env, A_SELECT0 + count)  # empty slot
    assert s.last_invalid[0] and s.sel[0] == -1
    step(env, A_SELECT0 + 1)
    obs = env.observations[0]
    assert s.sel[0] == 1 and obs[18] == 1.0 and obs[68 + 11 + 10] == 1.0
    conf0 = s.ast_obs[0, :, 9].copy()
    step(env, A_DEEP)
    assert s.ticks[0] == 1 + 1 + 4
    assert s.ast_obs[0, 1, 9] == pytest.approx(conf0[1] + 0.45)
    np.testing.assert_array_equal(np.delete(s.ast_obs[0, :, 9], 1), np.delete(conf0, 1))


def test_mine_standard_yield_heat_wear_depletion():
    env = make()
    goto_field(env)
    s = env.sim
    step(env, A_SELECT0)
    cur = s.cur[0, 0].astype(float)
    s.heat[0], s.alert[0] = 0.0, 0.0
    cargo0 = s.cargo[0].copy()
    step(env, A_MINE0 + 1)
    amount = cur[6] * 1.0 * 1.0 * 1.0 * 1.15  # richness, (1-depl), tool_eff, heat_eff, yield
    np.testing.assert_allclose(s.cargo[0] - cargo0, amount * cur[:6], rtol=1e-5)
    assert s.ast_obs[0, 0, 8] == pytest.approx(0.01 * amount, rel=1e-4)
    assert s.heat[0] == pytest.approx(4 - 2.5) and s.tool[0] == pytest.approx(98.4)
    assert s.alert[0] == 0.0 and s.mining_ticks[0] == 1  # v2: +0.8 then -1 decay


def test_mine_fills_cargo_to_capacity_exactly():
    env = make()
    goto_field(env)
    s = env.sim
    step(env, A_SELECT0)
    s.cargo[0] = [199.9, 0, 0, 0, 0, 0]
    step(env, A_MINE0 + 2)
    assert s.cargo[0].sum() == pytest.approx(200.0)


def test_fracture_damages_hull_and_raises_node_hazard():
    env = make(fracture_base=60.0, hazard_hull=0.0)
    node = goto_field(env, hazard=0.2)
    s = env.sim
    step(env, A_SELECT0)
    step(env, A_MINE0)
    assert 100 - 12 <= s.hull[0] <= 100 - 6
    assert s.ast_obs[0, 0, 8] == 1.0 and s.fractures[0] == 1
    assert s.hazard[0, node] == pytest.approx(0.25)
    step(env, A_MINE0)  # a depleted asteroid can no longer be mined
    assert s.last_invalid[0]


def test_stabilize_consumes_and_buffs():
    env = make()
    goto_field(env)
    s = env.sim
    step(env, A_STABILIZE)
    assert s.last_invalid[0]  # nothing selected
    step(env, A_SELECT0)
    t0 = s.ticks[0]
    step(env, A_STABILIZE)
    assert s.stabilizers[0] == 1 and s.ticks[0] == t0 + 2
    assert s.cur[0, 0, 9] == t0 + 6
    s.stabilizers[0] = 0
    step(env, A_STABILIZE)
    assert s.last_invalid[0]


def test_refine_cooldown_repairs_jettison():
    env = make()
    s = env.sim
    s.cargo[0, :2] = [100.0, 50.0]
    s.heat[0], s.alert[0] = 20.0, 10.0
    step(env, A_REFINE)
    np.testing.assert_allclose(s.cargo[0], [85, 42.5, 0, 0, 0.65 * 22.5, 0])
    assert s.fuel[0] == 996 and s.heat[0] == pytest.approx(21) and s.alert[0] == 11
    s.heat[0] = 50.0
    step(env, A_COOLDOWN)
    assert s.heat[0] == pytest.approx(25.0) and s.fuel[0] == 994 and s.alert[0] == 10
    s.tool[0], s.hull[0] = 50.0, 90.0
    step(env, A_TOOL)
    step(env, A_PATCH)
    assert s.tool[0] == 75 and s.hull[0] == 100 and s.kits[0] == 1
    s.kits[0] = 0
    step(env, A_TOOL)
    assert s.last_invalid[0] and s.tool[0] == 75
    s.alert[0] = 20.0
    step(env, 36 + 1)
    assert s.cargo[0, 1] == 0 and s.alert[0] == 11  # -8, then -1 decay


def test_dock_only_at_station():
    env = make()
    s = env.sim
    s.alert[0] = 50.0
    step(env, A_DOCK)
    assert s.alert[0] == 29 and not s.last_invalid[0]
    goto_field(env)
    step(env, A_DOCK)
    assert s.last_invalid[0]


def test_sell_with_slippage_and_market_bookkeeping():
    env = make()
    s = env.sim
    s.cargo[0, 3] = 40.0
    s.inventory[0, 3] = 60.0
    price = s.price[0, 3]
    r, *_ = step(env, A_SELL0 + 3 * 3 + 1)  # pge, 50%
    ratio = 20 / 80
    slip = 0.25 * ratio + 0.2 * np.sqrt(ratio)
    assert s.credits[0] == pytest.approx(20 * price * (1 - slip))
    assert s.cargo[0, 3] == pytest.approx(20)
    assert s.inventory[0, 3] == pytest.approx(80 * 0.998)
    assert s.recent_sales[0, 3] == pytest.approx(20 * np.exp(-1 / 14))
    assert r == pytest.approx(s.credits[0] / 1000 - 0.001, abs=2e-3)
    goto_field(env)
    step(env, A_SELL0)
    assert s.last_invalid[0]


def test_slippage_is_capped():
    env = make(slip_k=5.0)
    s = env.sim
    s.cargo[0, 0], s.inventory[0, 0] = 100.0, 0.0
    price = s.price[0, 0]
    step(env, A_SELL0 + 2)
    assert s.credits[0] == pytest.approx(100 * price * 0.3)


@pytest.mark.parametrize("rules", ["v1", "v2"])
def test_buys_and_net_profit(rules):
    env = make(rules)
    s = env.sim
    step(env, A_FUEL_S)
    assert s.last_invalid[0]  # no credits
    s.credits[0], s.fuel[0] = 1000.0, 900.0
    step(env, A_FUEL_S)
    assert s.credits[0] == 940 and s.fuel[0] == 1000 and s.total_spend[0] == 60
    net = s.net_profit()[0]
    assert net == (940 if rules == "v2" else 880)
    s.kits[0] = 12
    step(env, A_KIT)
    assert s.last_invalid[0] and s.credits[0] == 940
    s.hull[0], s.tool[0] = 50.0, 30.0
    t0 = s.ticks[0]
    step(env, A_OVERHAUL)
    assert s.hull[0] == 100 and s.tool[0] == 100 and s.credits[0] == 660
    assert s.ticks[0] == t0 + 3
    goto_field(env)
    step(env, A_FUEL_L)
    assert s.last_invalid[0]


def test_cash_out_v2_station_only_v1_anywhere():
    env = make("v2")
    s = env.sim
    s.credits[0] = 4000.0
    r, te, *_ = step(env, A_CASH_OUT)
    assert te and r == pytest.approx(-0.001 + 0.25 * 4.0)
    env = make("v2")
    goto_field(env)
    r, te, *_ = step(env, A_CASH_OUT)
    assert not te and env.sim.last_invalid[0] and r == pytest.approx(-0.011)
    env = make("v1")
    goto_field(env)
    r, te, _, infos = step(env, A_CASH_OUT)
    assert te and infos[0]["cashed_out"] == 1


def test_emergency_burn_escape_buff():
    env = make()
    s = env.sim
    step(env, A_BURN)
    assert s.fuel[0] == 982 and s.alert[0] == 9 and s.escape_until[0] == 0 + 4


def test_listen_updates_threat_estimates():
    env = make()
    s = env.sim
    step(env, A_LISTEN)
    se = s.slot_edge[0, 0]
    e = se[se >= 0].astype(int)
    est, true = s.threat_est[0, e], s.edge_threat[0, e]
    assert np.all(np.abs(est - (0.125 + 0.75 * true)) <= 0.75 * 0.5)
    assert not np.allclose(est, 0.5)
    np.testing.assert_allclose(env.observations[0, 24:66].reshape(6, 7)[se >= 0, 6], est,
                               rtol=1e-6)


def test_hazard_damage_above_threshold():
    env = make(hazard_hull=0.5)
    goto_field(env, hazard=0.8)
    s = env.sim
    s.heat[0], s.alert[0] = 50.0, 50.0
    step(env, A_HOLD)
    assert 100 - 0.45 * 0.5 * 1.2 <= s.hull[0] <= 100 - 0.45 * 0.5 * 0.8
    assert s.heat[0] == pytest.approx(45 + 0.4) and s.alert[0] == pytest.approx(46 + 0.64)
    env = make(hazard_hull=0.5)
    goto_field(env, hazard=0.3)  # below the v2 threshold
    step(env, A_HOLD)
    assert env.sim.hull[0] == 100.0


def test_pirate_encounter_effects():
    env = make(pirate_bias=60.0)
    goto_field(env, pirate=0.2)
    s = env.sim
    s.cargo[0, 0], s.decoys[0], s.alert[0] = 100.0, 0, 0.0
    price = s.price[0, 0]
    step(env, A_HOLD)
    assert s.encounters[0] == 1
    loss = 1 - s.cargo[0, 0] / 100
    assert 0.08 <= loss <= 0.20
    assert s.value_lost[0] == pytest.approx(100 * loss * price)
    assert 96 <= s.hull[0] <= 99 and s.alert[0] == 8
    r = ProspectorEnv(1, rules=get_rules("v2").replace(pirate_bias=60.0))
    r.reset()
    for _ in range(3):  # never at the station
        r.step(np.array([A_HOLD]))
    assert r.sim.encounters[0] == 0


def test_overheat_damage():
    env = make()
    goto_field(env)
    s = env.sim
    step(env, A_SELECT0)
    s.heat[0] = 100.0
    step(env, A_MINE0 + 2)  # +7, then -2.5: 4.5 above the limit
    assert s.hull[0] == pytest.approx(100 - 1.25 * 4.5)
    assert s.heat[0] == 100.0 and s.overheat_ticks[0] == 1


def test_dt_and_time_accounting_and_home_fuel_obs():
    env = make(time_max=100)
    s = env.sim
    for a, dt in ((A_HOLD, 1), (A_COOLDOWN, 2), (A_WIDE, 3), (A_OVERHAUL, 1)):
        t0 = s.ticks[0]
        step(env, a)
        assert s.ticks[0] - t0 == dt  # overhaul without credits: invalid, so dt 1
    assert s.time_remaining[0] == 100 - 7
    assert env.observations[0, 6] == pytest.approx(93 / 100)
    goto_field(env)
    s.cargo[0, 0] = 100.0
    s.credits[0] = 300.0
    step(env, A_HOLD)
    obs = env.observations[0]
    assert obs[66] == pytest.approx(s.home_fuel[0] * 1.25 / 160, rel=1e-5) and obs[66] > 0
    assert obs[67] == 1.0


def test_asteroid_state_persists_when_leaving_and_returning():
    env = make()
    node = goto_field(env)
    s = env.sim
    step(env, A_SELECT0 + 2)
    step(env, A_DEEP)
    step(env, A_MINE0 + 1)
    s.cur[0, 2, 9] = 55.0  # a stabilize buff that must survive the trip too
    before = s.ast_obs[0, :, :10].copy()
    back = int(np.flatnonzero(s.nbr[0, node] == 0)[0])  # slot leading to the station
    step(env, back)
    assert s.node[0] == 0 and np.all(s.ast_obs[0] == 0)
    out = int(np.flatnonzero(s.nbr[0, 0] == node)[0])
    step(env, out)
    assert s.node[0] == node and s.sel[0] == -1
    np.testing.assert_array_equal(s.ast_obs[0, :, :10], before)
    assert s.cur[0, 2, 9] == 55.0

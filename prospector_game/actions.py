"""Effects of the action groups that need more than a table lookup (rules sections 5-6).

Each function receives the simulator and the env indices that executed that (valid) action and
changes only those envs. Random words come from the step site `site` at fixed word offsets, so a
group's draws never shift another group's.
"""

from __future__ import annotations

import numpy as np

from .consts import (
    A_FOCUSED,
    A_MINE0,
    A_OVERHAUL,
    A_SELECT0,
    A_SELL0,
    CARGO_MAX,
    FUEL_MAX,
    HEAT_MAX,
    HULL_MAX,
    MAX_ASTEROIDS,
    MAX_NEIGHBORS,
    N_COMMODITIES,
    SELL_FRACTIONS,
    TOOL_MAX,
    clip_,
    fast_clip,
)
from .world import sum_last

# word offsets inside the per-step site: 0..7 are drawn for every env (ProspectorSim.step)
W_MARKET, W_HAZARD, W_NODE_ROLL = 0, 6, 7
W_TRAVEL = 8  # travel hull noise, edge pirate roll
W_NODE_ENC, W_EDGE_ENC = 10, 14
W_MINE = 18
W_LISTEN = 22
W_FOCUS = 28
W_WIDE = 40
_SCAN_NORMALS = 8  # 6 composition + 1 stability (+1 unused) per scanned asteroid

_SELL_FRAC = np.asarray(SELL_FRACTIONS)
_AST = np.arange(MAX_ASTEROIDS)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cargo_value(cargo: np.ndarray, price: np.ndarray) -> np.ndarray:
    return sum_last(cargo * price)


def _log_no_encounter(logit, dt):
    """log P(no encounter over dt ticks) = dt * log(1 - sigmoid(logit)), computed stably."""
    return -dt * np.log1p(np.exp(logit))


def _pirate_logit(s, intensity, alert, value, escape):
    r = s.r
    return (r.pirate_bias + r.pirate_intensity * intensity
            + r.pirate_alert * fast_clip(alert * (1.0 / 100.0), 0.0, 1.0)
            + r.pirate_cargo * np.log1p(value * 0.001) - r.pirate_escape * escape)


def _encounter(s, e, site, j0):
    """Effects of a pirate encounter on envs e (rules section 7)."""
    r = s.r
    w = site.take(e).uniform(j0, 3)
    loss = r.pirate_loss_lo + (r.pirate_loss_hi - r.pirate_loss_lo) * w[:, 0]
    use = (s.decoys[e] > 0) & (w[:, 1] < r.pirate_decoy_p)
    s.decoys[e] -= use
    loss = np.where(use, loss * r.pirate_decoy_mult, loss)
    lost = s.cargo[e] * loss[:, None]
    s.value_lost[e] += cargo_value(lost, s.price[e])
    s.cargo[e] -= lost
    s.hull[e] -= r.pirate_hull_lo + (r.pirate_hull_hi - r.pirate_hull_lo) * w[:, 2]
    s.alert[e] += r.alert_pirate
    s.encounters[e] += 1


def node_pirate_roll(s, t1, dt, u_roll, site):
    """The per-step roll at the node the ship is at (skipped at the station). Evaluated on all
    envs at once: most envs are in the field, and full-array math beats gathering them."""
    v = cargo_value(s.cargo, s.price)
    esc = s.escape_until > t1
    logit = _pirate_logit(s, s.here_pirate, s.alert, v, esc)
    # encounter iff u < 1 - P(none)  <=>  log1p(-u) > log P(none)
    hit = (np.log1p(-u_roll) > _log_no_encounter(logit, np.maximum(1, dt))) & (s.node != 0)
    e = np.flatnonzero(hit)
    if e.size:
        _encounter(s, e, site, W_NODE_ENC)


def travel(s, idx, a, dt, t0, site):
    r = s.r
    here = s.node[idx]
    slot = a[idx]
    e = s.slot_edge[idx, here, slot].astype(np.int64)
    dest = s.nbr[idx, here, slot].astype(np.int64)
    d = s.edge_time[idx, e].astype(np.int64)
    dt[idx] = d
    w = site.take(idx).uniform(W_TRAVEL, 2)
    mass = 1.0 + r.travel_mass_factor * sum_last(s.cargo[idx]) / CARGO_MAX
    s.fuel[idx] -= s.edge_fuel[idx, e] * mass
    s.move_to(idx, dest)
    th = s.edge_threat[idx, e]
    s.hull[idx] -= d * np.maximum(0.0, th - r.hazard_threshold) * r.hazard_hull * (
        0.85 + 0.3 * w[:, 0])
    s.heat[idx] += d * th * r.hazard_heat
    s.alert[idx] += d * th * r.hazard_alert
    # one roll on the edge unless arriving at the station (whose safety the node roll judges)
    roll = dest != 0
    if roll.any():
        ri = idx[roll]
        esc = s.escape_until[ri] > t0[ri]
        v = cargo_value(s.cargo[ri], s.price[ri])
        logit = _pirate_logit(s, th[roll], s.alert[ri], v, esc)
        hit = np.log1p(-w[roll, 1]) > _log_no_encounter(logit, d[roll])
        if hit.any():
            _encounter(s, ri[hit], site, W_EDGE_ENC)


def _renorm(x):
    x = np.maximum(x, 1e-8)
    return x / sum_last(x)[..., None]


def _scan_update(s, est, stab_est, conf, comp, stab, noise, z, mode):
    """Scan model of rules section 6 on arrays of any leading shape."""
    r = s.r
    blend, gain, mult = r.scan_blend[mode], r.scan_conf_gain[mode], r.scan_noise_mult[mode]
    sigma = noise * (1.0 - conf + 0.1) * mult
    noisy = _renorm(comp + sigma[..., None] * z[..., :N_COMMODITIES])
    new_est = _renorm((1.0 - blend) * est + blend * noisy)
    noisy_s = fast_clip(stab + sigma * z[..., N_COMMODITIES], 0.0, 1.0)
    new_stab = fast_clip((1.0 - blend) * stab_est + blend * noisy_s, 0.0, 1.0)
    return new_est, new_stab, np.minimum(1.0, conf + gain)


def wide_scan(s, idx, site):
    ao = s.ast_obs
    k = idx.shape[0]
    z = site.take(idx).normal(W_WIDE, MAX_ASTEROIDS * _SCAN_NORMALS).reshape(k, MAX_ASTEROIDS, -1)
    est = ao[idx, :, 1:7].astype(np.float64)
    cur = s.cur[idx]
    new_est, new_stab, new_conf = _scan_update(
        s, est, ao[idx, :, 7], ao[idx, :, 9], cur[..., :6], cur[..., 7], cur[..., 8], z, 0)
    exists = ao[idx, :, 0] > 0
    ao[idx, :, 1:7] = np.where(exists[..., None], new_est, est)
    ao[idx, :, 7] = np.where(exists, new_stab, ao[idx, :, 7])
    ao[idx, :, 9] = np.where(exists, new_conf, ao[idx, :, 9])
    s.scan_count[idx] += 1


def targeted_scan(s, idx, a, site):
    """Focused (mode 1) or deep (mode 2) scan of the selected asteroid."""
    ao = s.ast_obs
    sel = s.sel[idx]
    z = site.take(idx).normal(W_FOCUS, _SCAN_NORMALS)
    mode = np.where(a[idx] == A_FOCUSED, 1, 2)
    for m in (1, 2):
        mm = mode == m
        if not mm.any():
            continue
        i, sl = idx[mm], sel[mm]
        cur = s.cur[i, sl]
        new_est, new_stab, new_conf = _scan_update(
            s, ao[i, sl, 1:7].astype(np.float64), ao[i, sl, 7], ao[i, sl, 9],
            cur[:, :6], cur[:, 7], cur[:, 8], z[mm], m)
        ao[i, sl, 1:7] = new_est
        ao[i, sl, 7] = new_stab
        ao[i, sl, 9] = new_conf
    s.scan_count[idx] += 1


def listen(s, idx, site):
    r = s.r
    z = site.take(idx).normal(W_LISTEN, MAX_NEIGHBORS)
    se = s.slot_edge[idx, s.node[idx]].astype(np.int64)  # (k, 6)
    ok = se >= 0
    e = np.maximum(se, 0)
    rows = idx[:, None]
    true = s.edge_threat[rows, e]
    new = 0.25 * s.threat_est[rows, e] + 0.75 * fast_clip(true + r.listen_sigma * z, 0.0, 1.0)
    ii, kk = np.nonzero(ok)
    s.threat_est[idx[ii], e[ii, kk]] = new[ii, kk]
    s._nb_dirty.append(idx)


def select(s, idx, a):
    old = s.sel[idx]
    had = old >= 0
    s.ast_obs[idx[had], old[had], 10] = 0.0
    new = a[idx] - A_SELECT0
    s.sel[idx] = new
    s.ast_obs[idx, new, 10] = 1.0


def mine(s, idx, a, t0, site):
    r = s.r
    mode = a[idx] - A_MINE0
    sel = s.sel[idx]
    ao = s.ast_obs
    w = site.take(idx).uniform(W_MINE, 4)
    z = np.sqrt(-2.0 * np.log(np.maximum(w[:, 0], 1e-8))) * np.cos(
        (w[:, 1] * 2.0 * np.pi).astype(np.float32))
    tool_frac = fast_clip(s.tool[idx] / TOOL_MAX, 0.0, 1.0)
    heat_frac = fast_clip(s.heat[idx] / HEAT_MAX, 0.0, 2.0)
    tool_eff = 0.4 + 0.6 * tool_frac
    heat_eff = np.where(heat_frac <= 0.7, 1.0, np.maximum(0.1, 1.0 - (heat_frac - 0.7) / 0.3))
    depl = ao[idx, sel, 8].astype(np.float64)
    cur = s.cur[idx, sel].astype(np.float64)  # (k, 10) truth record
    yld = np.take(r.mine_yield, mode) * np.exp(np.take(r.mine_sigma, mode) * z)
    amount = cur[:, 6] * (1.0 - depl) * tool_eff * heat_eff * yld
    ext = amount[:, None] * cur[:, :6]
    total = sum_last(ext)
    free = np.maximum(0.0, CARGO_MAX - sum_last(s.cargo[idx]))
    scale = np.where(total > free, free / np.maximum(total, 1e-12), 1.0)
    ext *= scale[:, None]
    total = total * scale
    s.cargo[idx] += ext
    s.heat[idx] += np.take(r.mine_heat, mode)
    s.tool[idx] -= np.take(r.mine_wear, mode)
    s.alert[idx] += np.take(r.mine_alert, mode)
    depl = np.minimum(1.0, depl + r.depletion_rate * total)
    s.mining_ticks[idx] += 1
    stabilized = cur[:, 9] > t0[idx]
    logit = (r.fracture_base + np.take(r.mine_fracture_bias, mode)
             + r.fracture_stability * (1.0 - cur[:, 7])
             + r.fracture_heat * np.maximum(0.0, heat_frac - 0.7)
             + r.fracture_tool * (1.0 - tool_frac) - r.fracture_stabilized * stabilized)
    frac = w[:, 2] < sigmoid(logit)
    if frac.any():
        f = idx[frac]
        sev = 0.5 + 0.5 * w[frac, 3]
        s.hull[f] -= r.fracture_damage * sev
        depl[frac] = 1.0
        nf = s.node[f]
        s.hazard[f, nf] = np.minimum(1.0, s.hazard[f, nf] + r.fracture_hazard_gain)
        s.here_hazard[f] = s.hazard[f, nf]
        s.fractures[f] += 1
    ao[idx, sel, 8] = depl


def refine(s, idx):
    r = s.r
    iron = s.cargo[idx, 0] * r.refine_frac
    nickel = s.cargo[idx, 1] * r.refine_frac
    s.cargo[idx, 0] -= iron
    s.cargo[idx, 1] -= nickel
    s.cargo[idx, 4] += r.refine_gain * (iron + nickel)


def sell(s, idx, a):
    r = s.r
    k = a[idx] - A_SELL0
    c = k // 3
    qty = s.cargo[idx, c] * _SELL_FRAC[k % 3]
    inv = s.inventory[idx, c]
    ratio = qty / np.maximum(1.0, inv + qty)
    slip = fast_clip(r.slip_k * ratio + r.slip_root * np.sqrt(ratio), 0.0, r.slip_cap)
    s.credits[idx] += qty * s.price[idx, c] * (1.0 - slip)
    s.cargo[idx, c] -= qty
    s.inventory[idx, c] = inv + qty
    s.recent_sales[idx, c] += qty


def buy(s, idx, a):
    """Fuel packs, items and the overhaul (validity already checked)."""
    tab = s.tab
    ag = a[idx]
    cost = tab.cost[ag]
    s.credits[idx] -= cost
    s.total_spend[idx] += cost
    gain = tab.fuel_gain[ag]
    s.fuel[idx] = np.where(gain > 0, np.minimum(FUEL_MAX, s.fuel[idx] + gain), s.fuel[idx])
    it = tab.item[ag]
    s.kits[idx] += it == 0
    s.stabilizers[idx] += it == 1
    s.decoys[idx] += it == 2
    ov = idx[ag == A_OVERHAUL]
    s.hull[ov] = HULL_MAX
    s.tool[ov] = TOOL_MAX


def market_update(s, t, dt, z):
    """Prices, recent sales and inventories (rules section 7, market update); z: (N, 6)
    standard normals."""
    r = s.r
    turns = t[:, None] * s.omega  # omega is in turns per tick: reduce exactly, then sin
    turns -= np.floor(turns)
    wave = np.sin((turns * (2.0 * np.pi) + s.phase).astype(np.float32))
    sd = np.sqrt(np.maximum(dt, 1)) * r.market_noise
    s.prev_price = s.price
    p = s.amp * wave
    p += s.fixed_price
    p -= r.market_inventory_pressure * s.inventory
    p -= r.market_sales_pressure * s.recent_sales
    p += sd[:, None] * s.base * z
    s.price = clip_(p, s.pmin, s.pmax)
    s.recent_sales *= np.exp(dt * (-1.0 / r.market_sales_tau))[:, None]
    s.inventory *= r.market_inventory_decay

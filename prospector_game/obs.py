"""Observation vector (rules section 4; v2 changes in docs/ENV.md), written straight into the
PufferLib observation buffer.

Writing the 4 MB buffer of 4096 envs is memory-bound, so the layout of the writes matters more
than the arithmetic: scalars are assembled feature-major (contiguous rows, one fast write per
feature), the neighbour and asteroid blocks are kept ready in observation layout by the
simulator, and rows are assembled in cache-sized chunks that are copied out whole.
"""

from __future__ import annotations

import numpy as np

from .consts import (
    ALERT_MAX, CARGO_MAX, CREDITS_CAP, FUEL_MAX, HEAT_MAX, HULL_MAX, ITEM_CAP, MAX_NEIGHBORS,
    MAX_NODES, NB_FIELDS, OBS_AST0, OBS_DIM, OBS_INV_COMMODITIES, OBS_NB0, OBS_PRICE0, TOOL_MAX,
    fast_clip,
)

_INV_LOG_CREDITS = float(1.0 / np.log1p(CREDITS_CAP))
_INV_COLS = list(OBS_INV_COMMODITIES)
_N_SCALAR = OBS_NB0 + 2  # columns 0..23 plus 66, 67 (placed after the neighbour block)
_TRAVEL_FUEL_MAX = 160.0
_INVENTORY_CAP = 500.0
_NODE_SCALE = 1.0 / (MAX_NODES - 1)


def build_obs(sim, out: np.ndarray, idx=None) -> None:
    """Write observations of all envs (idx None) or of envs idx into out (N, 260) float32."""
    r = sim.r
    if idx is None:
        g = _all
        n = sim.N
        rows = sim.rows
    else:
        g = lambda x: x[idx]  # noqa: E731
        n = len(idx)
        rows = idx
    node = g(sim.node)
    sc = np.empty((_N_SCALAR, n), np.float32)
    np.multiply(g(sim.fuel), 1.0 / FUEL_MAX, out=sc[0], casting="unsafe")
    np.multiply(g(sim.hull), 1.0 / HULL_MAX, out=sc[1], casting="unsafe")
    np.multiply(g(sim.heat), 1.0 / HEAT_MAX, out=sc[2], casting="unsafe")
    np.multiply(g(sim.tool), 1.0 / TOOL_MAX, out=sc[3], casting="unsafe")
    np.multiply(g(sim.cargo_total), 1.0 / CARGO_MAX, out=sc[4], casting="unsafe")
    np.multiply(g(sim.alert), 1.0 / ALERT_MAX, out=sc[5], casting="unsafe")
    np.multiply(g(sim.time_remaining), 1.0 / sim.time_max, out=sc[6], casting="unsafe")
    np.minimum(np.log1p(np.maximum(0.0, g(sim.credits))) * _INV_LOG_CREDITS, 1.0, out=sc[7],
               casting="unsafe")
    np.multiply(g(sim.cargo).T, 1.0 / CARGO_MAX, out=sc[8:14], casting="unsafe")
    np.multiply(g(sim.kits), 1.0 / ITEM_CAP, out=sc[14], casting="unsafe")
    np.multiply(g(sim.stabilizers), 1.0 / ITEM_CAP, out=sc[15], casting="unsafe")
    np.multiply(g(sim.decoys), 1.0 / ITEM_CAP, out=sc[16], casting="unsafe")
    sc[17] = node == 0
    sel = g(sim.sel)
    sc[18] = (sel >= 0) & (sim.ast_obs[rows, np.maximum(sel, 0), 8] < 1.0)
    nt = sim.node_type[rows, node]
    sc[19] = nt == 0
    sc[20] = nt == 1
    sc[21] = nt == 2
    np.multiply(node, _NODE_SCALE, out=sc[22], casting="unsafe")
    np.multiply(sim.dist[rows, node], _NODE_SCALE, out=sc[23], casting="unsafe")
    if r.home_fuel_obs:
        mass = 1.0 + (r.travel_mass_factor / CARGO_MAX) * g(sim.cargo_total)
        hf = np.minimum(1.0, g(sim.home_fuel) * mass * (1.0 / _TRAVEL_FUEL_MAX))
        sc[24] = np.where(node == 0, 0.0, hf)
        sc[25] = g(sim.credits) >= r.fuel_pack_costs[2]
    else:
        sc[24:26] = 0.0
    fast_clip(sc, -1.0, 1.0, out=sc)

    price = g(sim.price)
    mk = np.empty((n, 16), np.float32)
    if r.price_obs_over_max:
        np.divide(price, sim.pmax, out=mk[:, :6], casting="unsafe")
    else:
        np.minimum(price / sim.base, 1.0, out=mk[:, :6], casting="unsafe")
    dp = price - g(sim.prev_price)
    if r.price_delta_over_base:
        dp /= sim.base
    else:
        dp *= 1.0 / r.price_delta_scale
    fast_clip(dp, -1.0, 1.0, out=mk[:, 6:12], casting="unsafe")
    np.minimum(g(sim.inventory)[:, _INV_COLS] * (1.0 / _INVENTORY_CAP), 1.0, out=mk[:, 12:],
               casting="unsafe")
    nb = g(sim.nb_obs).reshape(n, 42)
    ast = g(sim.ast_obs).reshape(n, 176)
    if idx is not None:
        dst = np.empty((n, OBS_DIM), np.float32)
        _assemble(dst, sc, nb, ast, mk)
        out[idx] = dst
        return
    # rows are assembled in cache-sized chunks and copied out whole: one pass over the big
    # buffer instead of one per column group (~15-20% faster when the buffer is cold)
    stage = np.empty((min(n, _CHUNK), OBS_DIM), np.float32)
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        st = stage[:b - a]
        _assemble(st, sc[:, a:b], nb[a:b], ast[a:b], mk[a:b])
        out[a:b] = st


_CHUNK = 512


def _assemble(dst, sc, nb, ast, mk):
    dst[:, :OBS_NB0] = sc[:OBS_NB0].T
    dst[:, OBS_NB0:OBS_NB0 + 42] = nb
    dst[:, 66:68] = sc[OBS_NB0:].T
    dst[:, OBS_AST0:OBS_AST0 + 176] = ast
    dst[:, OBS_PRICE0:] = mk


def _all(x):
    return x


def refresh_neighbours(sim, idx):
    """Rebuild the cached neighbour block (obs 24..65) and the home-fuel figure for idx."""
    here = sim.node[idx]
    nb = sim.nbr[idx, here].astype(np.int64)  # (k, 6)
    se = sim.slot_edge[idx, here].astype(np.int64)
    ok = nb >= 0
    rows = idx[:, None]
    nbc, sec = np.maximum(nb, 0), np.maximum(se, 0)
    ntype = sim.node_type[rows, nbc]
    out = np.empty((len(idx), MAX_NEIGHBORS, NB_FIELDS), np.float32)
    out[..., 0] = ok
    for t in range(3):
        out[..., 1 + t] = ok & (ntype == t)
    fuel = sim.edge_fuel[rows, sec]
    out[..., 4] = ok * sim.edge_time[rows, sec] * (1.0 / 8.0)
    out[..., 5] = ok * fuel * (1.0 / 160.0)
    out[..., 6] = ok * sim.threat_est[rows, sec]
    sim.nb_obs[idx] = out
    if sim.r.home_fuel_obs:
        closer = ok & (sim.dist[rows, nbc] < sim.dist[idx, here][:, None])
        cost = np.where(closer, fuel, np.inf).min(axis=1)
        sim.home_fuel[idx] = np.where(np.isfinite(cost), cost, 160.0)

"""Vectorized world generation: graph, market and (lazily, per node) asteroids.

Every function takes arrays over the envs being generated and draws from counter-based sites
(rng.py), so a world is a pure function of the episode seed.

Graph construction follows rules section 3 literally (a random recursive spanning tree, then n
extra edge attempts, each skipped if it duplicates an edge or an endpoint already has 6
neighbours), one attempt at a time but for all k worlds at once; the ~60 small NumPy calls per
attempt loop are paid once per batch, which is why ProspectorEnv prefetches worlds in batches
(WorldQueue). v1 drops a tree edge whose parent is full (the graph can be disconnected); v2
attaches that node to node j-1 instead, which at that moment has exactly one edge, so the tree
always spans and no node exceeds 6 neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .consts import (
    MAX_ASTEROIDS,
    MAX_EDGES,
    MAX_NEIGHBORS,
    MAX_NODES,
    N_COMMODITIES,
    NODE_CLUSTER,
    NODE_HAZARD,
    Rules,
)
from .rng import D_ASTEROIDS, D_WORLD, Site, normals_from_uniforms

NT = MAX_NODES - 1  # tree attempts (nodes 1..31)
NX = MAX_NODES  # extra-edge attempts
UNREACHABLE = 31

# word layout of the world site
_W_COUNT = 0
_W_TYPE = 1
_W_HAZ = _W_TYPE + NT
_W_PIR = _W_HAZ + NT
_W_PARENT = _W_PIR + NT
_W_XU = _W_PARENT + NT
_W_XV = _W_XU + NX
_W_ETIME = _W_XV + NX
_W_EFUEL = _W_ETIME + MAX_EDGES
_W_ETHREAT = _W_EFUEL + MAX_EDGES
_W_MARKET = _W_ETHREAT + 2 * ((MAX_EDGES + 1) // 2)
_W_TOTAL = _W_MARKET + 4 * N_COMMODITIES

_AST_WORDS = 20  # per asteroid: 6 composition, 2 richness normal, 5 beta, 1 noise, 6 prior


def sum_last(x: np.ndarray) -> np.ndarray:
    """Sum over a small last axis in a fixed left-to-right order, whatever the array's size
    (np.sum's pairwise order can change with layout, which would break bit-identical results
    across batch sizes). Both branches add in the same order: NumPy reduces fewer than 8
    elements sequentially. The column loop is 3x faster on thousands of rows; np.add.reduce is
    one call instead of six on a few rows."""
    if x.shape[-1] < 8 and x.size <= 1024:
        return np.add.reduce(x, axis=-1)
    s = x[..., 0].copy()
    for i in range(1, x.shape[-1]):
        s += x[..., i]
    return s


@dataclass
class Worlds:
    n: np.ndarray  # (k,) node count
    node_type: np.ndarray  # (k, 32) int8
    hazard: np.ndarray  # (k, 32)
    pirate: np.ndarray  # (k, 32)
    nbr: np.ndarray  # (k, 32, 6) int8, -1 empty
    slot_edge: np.ndarray  # (k, 32, 6) int8 edge id, -1 empty
    edge_time: np.ndarray  # (k, 63) int16
    edge_fuel: np.ndarray  # (k, 63)
    edge_threat: np.ndarray  # (k, 63)
    dist: np.ndarray  # (k, 32) int8 hops to the station, 31 if unreachable
    inventory: np.ndarray  # (k, 6)
    phase: np.ndarray
    period: np.ndarray
    amp: np.ndarray
    price: np.ndarray


def _ints(u: np.ndarray, lo, hi) -> np.ndarray:
    """Integer in [lo, hi) from uniforms; lo/hi broadcastable."""
    return (lo + np.floor(u * (hi - lo))).astype(np.int64)


def _build_graph(r: Rules, n, parent, xu, xv):
    """Rules section 3 steps 3-5 for k worlds at once. Returns neighbour slots, slot edge ids,
    the endpoints (eu, ev) of every attempt (edge id = attempt index) and adjacency bitmasks.
    Arrays are addressed through flat indices: NumPy's 1-D fancy indexing is several times
    cheaper than 3-D indexing, and this loop runs ~60 times per batch."""
    k = n.shape[0]
    M, S = MAX_NODES, MAX_NEIGHBORS
    rowbase = np.arange(k) * M
    deg = np.zeros(k * M, np.int64)
    adj = np.zeros(k * M, np.uint64)  # bit v of adj[u]: edge u-v exists
    nbr = np.full(k * M * S, -1, np.int8)
    slot_edge = np.full(k * M * S, -1, np.int8)
    eu = np.zeros((k, MAX_EDGES), np.int64)
    ev = np.zeros((k, MAX_EDGES), np.int64)
    one = np.uint64(1)

    def add(bx, by, x, y, edge):
        for b, other in ((bx, y), (by, x)):
            sx = deg[b]
            pos = b * S + sx
            nbr[pos] = other
            slot_edge[pos] = edge
            deg[b] = sx + 1
            adj[b] |= one << other.astype(np.uint64)

    for j in range(1, M):
        p = parent[:, j - 1]
        full = deg[rowbase + p] >= S
        if r.connected_graph:
            # node j-1 has only its own parent edge at this point, so it always has room
            p = np.where(full, j - 1, p)
            ok = j < n
        else:
            ok = (j < n) & ~full
        eu[:, j - 1], ev[:, j - 1] = j, p
        ii = np.flatnonzero(ok)
        if ii.size:
            pi, rb = p[ii], rowbase[ii]
            add(rb + j, rb + pi, np.full(ii.size, j), pi, j - 1)
    eu[:, NT:], ev[:, NT:] = xu, xv
    for b in range(NX):
        u, v = xu[:, b], xv[:, b]
        bu, bv = rowbase + u, rowbase + v
        exists = ((adj[bu] >> v.astype(np.uint64)) & one).astype(bool)
        ok = (b < n) & (u != v) & ~exists & (deg[bu] < S) & (deg[bv] < S)
        ii = np.flatnonzero(ok)
        if ii.size:
            add(bu[ii], bv[ii], u[ii], v[ii], NT + b)
    return nbr.reshape(k, M, S), slot_edge.reshape(k, M, S), eu, ev, adj.reshape(k, M)


def _hops_to_station(adj: np.ndarray, n: np.ndarray) -> np.ndarray:
    """BFS from node 0 on adjacency bitmasks, one level per iteration for all worlds."""
    k = adj.shape[0]
    bits = np.arange(MAX_NODES, dtype=np.uint64)
    one = np.uint64(1)
    dist = np.full((k, MAX_NODES), UNREACHABLE, np.int8)
    dist[:, 0] = 0
    reach = np.ones(k, np.uint64)
    frontier = reach.copy()
    for d in range(1, MAX_NODES):
        inf = ((frontier[:, None] >> bits) & one).astype(bool)
        nxt = np.bitwise_or.reduce(np.where(inf, adj, np.uint64(0)), axis=1)
        frontier = nxt & ~reach
        if not frontier.any():
            break
        reach |= frontier
        dist[((frontier[:, None] >> bits) & one).astype(bool)] = d
    return dist


def generate_worlds(r: Rules, keys: np.ndarray) -> Worlds:
    k = keys.shape[0]
    u = Site(keys, D_WORLD, 0).uniform(0, _W_TOTAL)
    n = _ints(u[:, _W_COUNT], r.node_count_lo, r.node_count_hi + 1)
    nodes = np.arange(MAX_NODES)
    node_ok = nodes[None, :] < n[:, None]

    # nodes
    is_haz = u[:, _W_TYPE:_W_TYPE + NT] < r.hazard_node_p
    haz = r.node_hazard_lo + (r.node_hazard_hi - r.node_hazard_lo) * u[:, _W_HAZ:_W_HAZ + NT]
    pir = r.node_pirate_lo + (r.node_pirate_hi - r.node_pirate_lo) * u[:, _W_PIR:_W_PIR + NT]
    haz = np.minimum(1.0, haz + r.hazard_node_extra_hazard * is_haz)
    pir = np.minimum(1.0, pir + r.hazard_node_extra_pirate * is_haz)
    node_type = np.zeros((k, MAX_NODES), np.int8)
    node_type[:, 1:] = np.where(is_haz, NODE_HAZARD, NODE_CLUSTER)
    hazard = np.zeros((k, MAX_NODES))
    pirate = np.zeros((k, MAX_NODES))
    hazard[:, 1:] = haz
    pirate[:, 1:] = pir
    node_type[~node_ok] = 0
    hazard[~node_ok] = 0.0
    pirate[~node_ok] = 0.0

    # graph: the spec's sequential procedure, one edge attempt at a time over all k worlds
    j_idx = np.arange(1, MAX_NODES)
    parent = _ints(u[:, _W_PARENT:_W_PARENT + NT], 0, j_idx[None, :])
    xu = _ints(u[:, _W_XU:_W_XU + NX], 0, n[:, None])
    xv = _ints(u[:, _W_XV:_W_XV + NX], 0, n[:, None])
    nbr, slot_edge, eu, ev, adj = _build_graph(r, n, parent, xu, xv)

    # edge attributes, drawn per attempt whether or not it was accepted (keeps draws fixed)
    edge_time = _ints(u[:, _W_ETIME:_W_ETIME + MAX_EDGES], 1, r.edge_time_max + 1).astype(np.int16)
    span = r.edge_fuel_hi - r.edge_fuel_lo
    edge_fuel = r.edge_fuel_lo + span * u[:, _W_EFUEL:_W_EFUEL + MAX_EDGES]
    z = normals_from_uniforms(u[:, _W_ETHREAT:_W_MARKET])[:, :MAX_EDGES]
    hu, hv = np.take_along_axis(hazard, eu, 1), np.take_along_axis(hazard, ev, 1)
    pu, pv = np.take_along_axis(pirate, eu, 1), np.take_along_axis(pirate, ev, 1)
    threat = np.clip(0.5 * (hu + hv) + 0.5 * (pu + pv) + r.edge_threat_sigma * z, 0.0, 1.0)

    dist = _hops_to_station(adj, n)

    # market
    m = u[:, _W_MARKET:_W_MARKET + 4 * N_COMMODITIES].reshape(k, 4, N_COMMODITIES)
    base = np.asarray(r.price_base)
    inventory = r.market_inventory_lo + (r.market_inventory_hi - r.market_inventory_lo) * m[:, 0]
    phase = 2.0 * np.pi * m[:, 1]
    period = r.market_period_lo + (r.market_period_hi - r.market_period_lo) * m[:, 2]
    amp = base * (r.market_amp_lo + (r.market_amp_hi - r.market_amp_lo) * m[:, 3])
    price = np.clip(base + amp * np.sin(phase), r.price_min, r.price_max)

    return Worlds(n=n, node_type=node_type, hazard=hazard, pirate=pirate, nbr=nbr,
                  slot_edge=slot_edge, edge_time=edge_time, edge_fuel=edge_fuel,
                  edge_threat=threat, dist=dist, inventory=inventory, phase=phase,
                  period=period, amp=amp, price=price)


@dataclass
class Asteroids:
    count: np.ndarray  # (m,)
    comp: np.ndarray  # (m, 16, 6) true composition
    richness: np.ndarray  # (m, 16)
    stability: np.ndarray  # (m, 16) true
    noise: np.ndarray  # (m, 16) noise profile
    est: np.ndarray  # (m, 16, 6) initial composition estimate (a random prior)


def _dirichlet(u: np.ndarray) -> np.ndarray:
    e = -np.log(np.maximum(u, np.float32(1e-8)))
    return e / np.maximum(sum_last(e), np.float32(1e-12))[..., None]


def generate_asteroids(r: Rules, keys: np.ndarray, nodes: np.ndarray) -> Asteroids:
    """Asteroids of (env key, node) pairs, float32; slots >= count are zero."""
    m = keys.shape[0]
    u = Site(keys, D_ASTEROIDS, nodes).uniform32(0, 1 + MAX_ASTEROIDS * _AST_WORDS)
    count = _ints(u[:, 0], r.asteroid_count_lo, r.asteroid_count_hi + 1)
    a = u[:, 1:].reshape(m, MAX_ASTEROIDS, _AST_WORDS)
    exists = np.arange(MAX_ASTEROIDS)[None, :] < count[:, None]
    comp = _dirichlet(a[..., 0:6])
    z = normals_from_uniforms(a[..., 6:8])[..., 0]
    richness = np.clip(np.exp(np.float32(r.richness_mu) + np.float32(r.richness_sigma) * z),
                       np.float32(r.richness_lo), np.float32(r.richness_hi))
    e = -np.log(np.maximum(a[..., 8:13], np.float32(1e-8)))
    g3 = e[..., 0] + e[..., 1] + e[..., 2]
    g2 = e[..., 3] + e[..., 4]
    stability = g3 / np.maximum(g3 + g2, np.float32(1e-12))
    noise = np.float32(r.noise_profile_lo) + np.float32(
        r.noise_profile_hi - r.noise_profile_lo) * a[..., 13]
    est = _dirichlet(a[..., 14:20])
    ex = exists[..., None]
    return Asteroids(count=count, comp=comp * ex, richness=richness * exists,
                     stability=stability * exists, noise=noise * exists, est=est * ex)

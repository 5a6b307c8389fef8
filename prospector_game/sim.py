"""The vectorized simulator: state as arrays over envs, one `step` applying every rule to all
envs at once (rules section 7). Observation and info formatting live elsewhere
(obs.py, env.py).

Performance notes (see docs/ENV.md, "Where the time goes"): envs are grouped by requested action
with one radix sort per step, so each action group's validity and effects touch only its own
envs; simple per-action effects (fuel, heat, alert, dt) are table lookups on the executed id.
"""

from __future__ import annotations

import numpy as np

from . import actions as act
from .consts import (
    A_BURN, A_CASH_OUT, A_DEEP, A_DOCK, A_FOCUSED, A_FUEL_S, A_HOLD, A_JETTISON0, A_LISTEN,
    A_MINE0, A_OVERHAUL, A_PATCH, A_REFINE, A_SELECT0, A_SELL0, A_STABILIZE, A_TOOL, A_WIDE,
    ALERT_MAX, CARGO_MAX, FUEL_MAX, HEAT_MAX, HULL_MAX, ITEM_CAP, MAX_ASTEROIDS, MAX_EDGES,
    MAX_NEIGHBORS, MAX_NODES, N_ACTIONS, N_COMMODITIES, NB_FIELDS, TOOL_MAX, ActionTables,
    Rules, clip_,
)
from .obs import refresh_neighbours
from .rng import D_STEP, Site, episode_key, popcount_normals
from .world import generate_asteroids, generate_worlds, sum_last

# asteroid truth record (float32): composition 0..5, richness, stability, noise profile, and the
# tick until which a stabilize buff lasts (exact in float32 below 2**24 ticks)
T_RICH, T_STAB, T_NOISE, T_UNTIL, T_FIELDS = 6, 7, 8, 9, 10
_EMPTY = np.zeros(0, np.int64)


class ProspectorSim:
    def __init__(self, n: int, rules: Rules, time_max: int):
        self.N, self.r, self.time_max = n, rules, int(time_max)
        self.tab = ActionTables(rules)
        r, N, A = rules, n, MAX_ASTEROIDS
        self.base = np.asarray(r.price_base)
        self.fixed_price = self.base.copy()
        self.pmin, self.pmax = np.asarray(r.price_min), np.asarray(r.price_max)
        f = lambda *shape: np.zeros((N,) + shape)  # noqa: E731
        i = lambda *shape: np.zeros((N,) + shape, np.int64)  # noqa: E731
        self.seed = np.zeros(N, np.uint64)
        self.key = np.zeros(N, np.uint64)
        for name in ("fuel", "hull", "heat", "tool", "alert", "credits", "total_spend",
                     "value_lost", "fuel_used", "hull_damage", "tool_wear", "util_acc",
                     "ep_return", "here_hazard", "here_pirate"):
            setattr(self, name, f())
        for name in ("kits", "stabilizers", "decoys", "node", "sel", "time_remaining", "ticks",
                     "t", "escape_until", "overheat_ticks", "encounters", "scan_count",
                     "mining_ticks", "fractures", "last_action", "last_dt"):
            setattr(self, name, i())
        self.last_invalid = np.zeros(N, bool)
        self.ast_dirty = np.zeros(N, bool)  # working set differs from the store
        self.cargo = f(N_COMMODITIES)
        # world
        self.n_nodes = i()
        self.node_type = np.zeros((N, MAX_NODES), np.int8)
        self.hazard, self.pirate = f(MAX_NODES), f(MAX_NODES)
        self.nbr = np.full((N, MAX_NODES, MAX_NEIGHBORS), -1, np.int8)
        self.slot_edge = np.full((N, MAX_NODES, MAX_NEIGHBORS), -1, np.int8)
        self.edge_time = np.zeros((N, MAX_EDGES), np.int16)
        self.edge_fuel, self.edge_threat, self.threat_est = f(MAX_EDGES), f(MAX_EDGES), f(MAX_EDGES)
        self.dist = np.zeros((N, MAX_NODES), np.int8)
        for name in ("price", "prev_price", "inventory", "recent_sales", "phase", "omega", "amp"):
            setattr(self, name, f(N_COMMODITIES))
        # asteroids: a float32 store for every node, generated on first arrival, plus a working
        # set for the node the ship is at (authoritative while the ship is there). The working
        # set's estimates live in `ast_obs`, already in observation layout:
        # [exists, estimate(6), stability estimate, depletion, confidence, selected].
        self.generated = np.zeros((N, MAX_NODES), bool)
        self.st_count = np.zeros((N, MAX_NODES), np.int8)
        self.st_truth = np.zeros((N, MAX_NODES, A, T_FIELDS), np.float32)
        self.st_mut = np.zeros((N, MAX_NODES, A, 9), np.float32)
        self.cur = np.zeros((N, A, T_FIELDS), np.float32)
        self.ast_obs = np.zeros((N, A, 11), np.float32)
        self.nb_obs = np.zeros((N, MAX_NEIGHBORS, NB_FIELDS), np.float32)
        self.home_fuel = f()  # base fuel cost of the cheapest edge one hop closer to the station
        self.cargo_total = f()
        self.rows = np.arange(N)
        self._nb_dirty = []

    # ------------------------------------------------------------------ episodes
    def start_episodes(self, idx: np.ndarray, seeds: np.ndarray, worlds=None) -> None:
        """Begin a fresh episode with the given uint64 seeds for envs idx (worlds: their
        pre-generated worlds, or None to generate them here)."""
        r = self.r
        seeds = np.asarray(seeds, np.uint64)
        self.seed[idx] = seeds
        keys = episode_key(seeds)
        self.key[idx] = keys
        w = generate_worlds(r, keys) if worlds is None else worlds
        self.n_nodes[idx] = w.n
        self.node_type[idx] = w.node_type
        self.hazard[idx] = w.hazard
        self.pirate[idx] = w.pirate
        self.nbr[idx] = w.nbr
        self.slot_edge[idx] = w.slot_edge
        self.edge_time[idx] = w.edge_time
        self.edge_fuel[idx] = w.edge_fuel
        self.edge_threat[idx] = w.edge_threat
        self.threat_est[idx] = r.start_threat_est
        self.dist[idx] = w.dist
        self.inventory[idx] = w.inventory
        self.phase[idx] = w.phase
        self.omega[idx] = 1.0 / w.period
        self.amp[idx] = w.amp
        self.price[idx] = w.price
        self.prev_price[idx] = w.price
        self.recent_sales[idx] = 0.0
        self.fuel[idx], self.hull[idx], self.heat[idx] = FUEL_MAX, HULL_MAX, 0.0
        self.tool[idx], self.alert[idx], self.credits[idx] = TOOL_MAX, 0.0, 0.0
        self.cargo[idx] = 0.0
        self.kits[idx], self.stabilizers[idx] = r.start_kits, r.start_stabilizers
        self.decoys[idx] = r.start_decoys
        self.node[idx], self.sel[idx] = 0, -1
        self.time_remaining[idx] = self.time_max
        for name in ("ticks", "t", "overheat_ticks", "encounters", "scan_count", "mining_ticks",
                     "fractures", "last_dt"):
            getattr(self, name)[idx] = 0
        for name in ("total_spend", "value_lost", "fuel_used", "hull_damage", "tool_wear",
                     "util_acc", "ep_return", "here_hazard", "here_pirate",
                     "cargo_total"):
            getattr(self, name)[idx] = 0.0
        self.escape_until[idx] = -1
        self.last_action[idx] = -1
        self.last_invalid[idx] = False
        self.generated[idx] = False
        self.ast_dirty[idx] = False
        self.cur[idx] = 0.0
        self.ast_obs[idx] = 0.0
        self.refresh_neighbours(idx)

    # ------------------------------------------------------------------ asteroid working set
    def _store_node(self, idx):
        """Write the working set back, only for envs whose asteroids changed since arrival
        (random play mostly passes through: most departures have nothing to persist)."""
        keep = self.ast_dirty[idx] & (self.node[idx] != 0)
        i = idx[keep]
        if i.size:
            h = self.node[i]
            self.st_mut[i, h] = self.ast_obs[i, :, 1:10]
            self.st_truth[i, h] = self.cur[i]
            self.ast_dirty[i] = False

    def _load_node(self, idx, dest):
        new = ~self.generated[idx, dest] & (dest != 0)
        old = idx[~new]
        od = dest[~new]
        # node 0 (the station) is never written, so its store rows read as "no asteroids"
        self.cur[old] = self.st_truth[old, od]
        ao = np.empty((len(old), MAX_ASTEROIDS, 11), np.float32)
        ao[:, :, 0] = np.arange(MAX_ASTEROIDS)[None, :] < self.st_count[old, od][:, None]
        ao[:, :, 1:10] = self.st_mut[old, od]
        ao[:, :, 10] = 0.0
        self.ast_obs[old] = ao
        if new.any():
            # first visit: generate straight into the working set; the store gets it when
            # the ship leaves (marked dirty)
            gi, gd = idx[new], dest[new]
            a = generate_asteroids(self.r, self.key[gi], gd)
            exists = np.arange(MAX_ASTEROIDS)[None, :] < a.count[:, None]
            tr = np.empty(a.est.shape[:2] + (T_FIELDS,), np.float32)
            tr[..., :6] = a.comp
            tr[..., T_RICH], tr[..., T_STAB], tr[..., T_NOISE] = a.richness, a.stability, a.noise
            tr[..., T_UNTIL] = -1.0
            ao = np.zeros(a.est.shape[:2] + (11,), np.float32)
            ao[..., 0] = exists
            ao[..., 1:7] = a.est
            ao[..., 7] = self.r.start_stability_est * exists
            ao[..., 9] = self.r.start_confidence * exists
            self.st_count[gi, gd] = a.count
            self.generated[gi, gd] = True
            self.cur[gi] = tr
            self.ast_obs[gi] = ao
            self.ast_dirty[gi] = True

    def move_to(self, idx, dest):
        self._store_node(idx)
        self.node[idx] = dest
        self.sel[idx] = -1
        self.here_hazard[idx] = self.hazard[idx, dest]
        self.here_pirate[idx] = self.pirate[idx, dest]
        self._load_node(idx, dest)
        self._nb_dirty.append(idx)

    def refresh_neighbours(self, idx):
        refresh_neighbours(self, idx)

    # ------------------------------------------------------------------ step
    def _selected_ok(self, g):
        s = self.sel[g]
        return (s >= 0) & (self.ast_obs[g, np.maximum(s, 0), 8] < 1.0)

    def step(self, a: np.ndarray):
        """Advance every env by one decision. Returns (reward, terminated, truncated, flags)."""
        r, tab, N = self.r, self.tab, self.N
        t0 = self.ticks
        credits0, fuel0, hull0 = self.credits.copy(), self.fuel.copy(), self.hull.copy()
        tool0, lost0 = self.tool.copy(), self.value_lost.copy()
        cval0 = act.cargo_value(self.cargo, self.price)
        site = Site(self.key, D_STEP, self.t)
        words = site.words(0, 8)  # words 0..5 market noise, 6 hazard noise, 7 node pirate roll
        u = words[:, 6:8].astype(np.float64) * (1.0 / 4294967296.0)

        # group envs by requested action (radix sort on uint8); each group checks its own
        # validity on its own envs
        order = np.argsort(a.astype(np.uint8), kind="stable")
        bounds = np.zeros(N_ACTIONS + 1, np.int64)
        np.cumsum(np.bincount(a, minlength=N_ACTIONS), out=bounds[1:])
        bad = []

        def grp(lo, hi=None):
            return order[bounds[lo]:bounds[lo + 1 if hi is None else hi]]

        def keep(g, ok):
            if not ok.all():
                bad.append(g[~ok])
                return g[ok]
            return g

        at = self.node
        g_travel = grp(0, 6)
        if g_travel.size:
            g_travel = keep(g_travel, self.nb_obs[g_travel, a[g_travel], 0] > 0)
        g_select = grp(A_SELECT0, A_SELECT0 + MAX_ASTEROIDS)
        if g_select.size:
            sl = a[g_select] - A_SELECT0
            ao = self.ast_obs
            g_select = keep(g_select, (ao[g_select, sl, 0] > 0) & (ao[g_select, sl, 8] < 1.0))
        g_scan = grp(A_FOCUSED, A_DEEP + 1)
        if g_scan.size:
            g_scan = keep(g_scan, self._selected_ok(g_scan))
        g_mine = grp(A_MINE0, A_MINE0 + 3)
        if g_mine.size:
            g_mine = keep(g_mine, self._selected_ok(g_mine))
        g_stab = grp(A_STABILIZE)
        if g_stab.size:
            g_stab = keep(g_stab, self._selected_ok(g_stab) & (self.stabilizers[g_stab] > 0))
        g_repair = grp(A_TOOL, A_PATCH + 1)
        if g_repair.size:
            g_repair = keep(g_repair, self.kits[g_repair] > 0)
        g_dock = grp(A_DOCK)
        if g_dock.size:
            g_dock = keep(g_dock, at[g_dock] == 0)
        g_sell = grp(A_SELL0, A_FUEL_S)
        if g_sell.size:
            g_sell = keep(g_sell, at[g_sell] == 0)
        g_buy = grp(A_FUEL_S, A_OVERHAUL + 1)
        if g_buy.size:
            ab = a[g_buy]
            it = tab.item[ab]
            held = np.where(it == 0, self.kits[g_buy],
                            np.where(it == 1, self.stabilizers[g_buy], self.decoys[g_buy]))
            g_buy = keep(g_buy, (at[g_buy] == 0) & (self.credits[g_buy] >= tab.cost[ab])
                         & ((it < 0) | (held < ITEM_CAP)))
        g_cash = grp(A_CASH_OUT)
        if g_cash.size and r.cash_out_station_only:
            g_cash = keep(g_cash, at[g_cash] == 0)
        invalid = np.concatenate(bad) if bad else _EMPTY
        ea = a.copy()
        ea[invalid] = A_HOLD  # invalid actions execute as HOLD
        if invalid.size and not r.invalid_scan_free:
            # v1 charges a scan's fuel and alert before checking it is valid
            pre = invalid[tab.scan[a[invalid]]]
            self.fuel[pre] -= tab.fuel[a[pre]]
            self.alert[pre] += tab.alert[a[pre]]

        dt = tab.dt[ea]
        self.fuel -= tab.fuel[ea]
        self.alert = np.maximum(0.0, self.alert + tab.alert[ea])
        self.heat = np.maximum(0.0, self.heat + tab.heat[ea])
        g = grp(A_BURN)
        if g.size:
            self.escape_until[g] = np.maximum(self.escape_until[g], t0[g] + r.escape_ticks)
        if g_travel.size:
            act.travel(self, g_travel, a, dt, t0, site)
        g = grp(A_WIDE)
        if g.size:
            self.ast_dirty[g] = True
            act.wide_scan(self, g, site)
        if g_scan.size:
            self.ast_dirty[g_scan] = True
            act.targeted_scan(self, g_scan, a, site)
        g = grp(A_LISTEN)
        if g.size:
            act.listen(self, g, site)
        if g_select.size:
            act.select(self, g_select, a)
        if g_mine.size:
            self.ast_dirty[g_mine] = True
            act.mine(self, g_mine, a, t0, site)
        if g_stab.size:
            self.ast_dirty[g_stab] = True
            self.stabilizers[g_stab] -= 1
            self.cur[g_stab, self.sel[g_stab], T_UNTIL] = t0[g_stab] + r.stabilize_ticks
        g = grp(A_REFINE)
        if g.size:
            act.refine(self, g)
        if g_repair.size:
            self.kits[g_repair] -= 1
            tool = g_repair[a[g_repair] == A_TOOL]
            patch = g_repair[a[g_repair] == A_PATCH]
            self.tool[tool] = np.minimum(TOOL_MAX, self.tool[tool] + r.tool_repair)
            self.hull[patch] = np.minimum(HULL_MAX, self.hull[patch] + r.hull_repair)
        g = grp(A_JETTISON0, A_JETTISON0 + N_COMMODITIES)
        if g.size:
            self.cargo[g, a[g] - A_JETTISON0] = 0.0
        if g_sell.size:
            act.sell(self, g_sell, a)
        if g_buy.size:
            act.buy(self, g_buy, a)
        if self._nb_dirty:
            self.refresh_neighbours(np.concatenate(self._nb_dirty))
            self._nb_dirty = []

        # global dynamics (rules section 7.4)
        self.time_remaining -= dt
        self.heat = np.maximum(0.0, self.heat - r.heat_dissipation * dt)
        if r.alert_decay:
            self.alert = np.maximum(0.0, self.alert - r.alert_decay * dt)
        over = np.maximum(0.0, self.heat - HEAT_MAX)
        self.hull -= r.overheat_damage * over
        self.heat -= over
        self.overheat_ticks += dt * (over > 0)
        hz = self.here_hazard  # zero at the station
        self.hull -= dt * np.maximum(0.0, hz - r.hazard_threshold) * r.hazard_hull * (
            0.8 + 0.4 * u[:, 0])
        self.heat += (r.hazard_heat * hz) * dt
        self.alert += (r.hazard_alert * hz) * dt
        t1 = t0 + dt
        act.node_pirate_roll(self, t1, dt, u[:, 1], site)
        act.market_update(self, t1, dt, popcount_normals(words[:, :6]))
        clip_(self.fuel, 0.0, FUEL_MAX)
        clip_(self.hull, 0.0, HULL_MAX)
        clip_(self.heat, 0.0, HEAT_MAX)
        clip_(self.tool, 0.0, TOOL_MAX)
        clip_(self.alert, 0.0, ALERT_MAX)
        np.maximum(self.time_remaining, 0, out=self.time_remaining)
        clip_(self.cargo, 0.0, CARGO_MAX)
        tot = sum_last(self.cargo)
        big = tot > CARGO_MAX
        if big.any():
            self.cargo[big] *= (CARGO_MAX / tot[big])[:, None]
            tot = np.minimum(tot, CARGO_MAX)
        self.cargo_total = tot
        self.util_acc += tot * (1.0 / CARGO_MAX) * dt
        self.ticks = t1
        self.t += 1

        # endings are exclusive, in the order the terminal reward checks them
        destroyed = self.hull <= 0.0
        stranded = (self.fuel <= 0.0) & (self.node != 0) & ~destroyed
        cashed = np.zeros(N, bool)
        cashed[g_cash] = True
        cashed &= ~(destroyed | stranded)
        terminated = destroyed | stranded | cashed
        truncated = (self.time_remaining <= 0) & ~terminated

        # reward (rules section 8)
        fuel_drop = np.maximum(0.0, fuel0 - self.fuel)
        hull_drop = np.maximum(0.0, hull0 - self.hull)
        tool_drop = np.maximum(0.0, tool0 - self.tool)
        cval1 = act.cargo_value(self.cargo, self.price)
        rew = (self.credits - credits0) * 0.001
        rew += (r.r_extract * 0.001) * np.maximum(0.0, cval1 - cval0)
        rew -= (r.r_fuel * 0.01) * fuel_drop
        rew -= r.r_time * dt
        rew -= (r.r_wear * 0.1) * tool_drop
        rew -= (r.r_damage * 0.1) * hull_drop
        rew -= (r.r_heat * 1e-4) * np.maximum(0.0, self.heat - 70.0) ** 2
        rew -= (r.r_pirate * 0.001) * (self.value_lost - lost0)
        rew -= tab.penalty[ea]
        if invalid.size:
            rew[invalid] -= r.r_invalid
        ended = terminated | truncated
        if ended.any():
            intact = ended & ~destroyed & ~stranded
            rew -= np.where(destroyed, r.r_destroyed, np.where(stranded, r.r_stranded, 0.0))
            rew += np.where(intact, (r.r_terminal_credits * 0.001) * self.credits, 0.0)

        if r.cumulative_usage:
            self.fuel_used += fuel_drop
            self.hull_damage += hull_drop
            self.tool_wear += tool_drop
        else:
            self.fuel_used = np.maximum(0.0, FUEL_MAX - self.fuel)
            self.hull_damage = np.maximum(0.0, HULL_MAX - self.hull)
            self.tool_wear = np.maximum(0.0, TOOL_MAX - self.tool)
        self.ep_return += rew
        self.last_action, self.last_dt = ea, dt
        self.last_invalid = np.zeros(N, bool)
        self.last_invalid[invalid] = True
        return rew, terminated, truncated, (destroyed, stranded, cashed)

    def net_profit(self):
        if self.r.net_profit_single_spend:
            return self.credits.copy()
        return self.credits - self.total_spend

"""Frozen interface constants and the two rule sets (v1, v2) of Asteroid Belt Prospector.

Every tunable number lives in the `Rules` dataclass so that v1 and v2 differ only by data and a
few behaviour flags. The rules are docs/GAME_RULES.md; the v2 choices and the measurements behind
them are in docs/ENV.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

try:  # the clip ufunc itself: np.clip's Python wrapper costs more than clipping 1k values
    from numpy._core.umath import clip as fast_clip
except ImportError:  # pragma: no cover - other NumPy layouts
    fast_clip = np.clip


def clip_(x, lo, hi):
    """Clip x in place and return it."""
    return fast_clip(x, lo, hi, out=x)

# --- frozen interface -------------------------------------------------------------------------
N_COMMODITIES = 6
COMMODITIES = ("iron", "nickel", "water_ice", "pge", "rare_isotopes", "volatiles")
MAX_NODES = 32
MAX_NEIGHBORS = 6
MAX_ASTEROIDS = 16
NODE_STATION, NODE_CLUSTER, NODE_HAZARD = 0, 1, 2
OBS_DIM = 260
N_ACTIONS = 69
CREDIT_SCALE = 1000.0
FUEL_MAX, HULL_MAX, HEAT_MAX, TOOL_MAX = 1000.0, 100.0, 100.0, 100.0
CARGO_MAX, ALERT_MAX = 200.0, 100.0
TIME_MAX = 20000
ITEM_CAP = 12  # repair kits / stabilizers / decoys: obs caps and shop limit

# Extra-edge attempts are at most MAX_NODES; tree edges at most MAX_NODES - 1. An edge id is the
# attempt index, so per-edge arrays have this width.
MAX_EDGES = 2 * MAX_NODES - 1

# --- action ids -------------------------------------------------------------------------------
A_TRAVEL0 = 0  # 0..5
A_HOLD = 6
A_BURN = 7
A_WIDE, A_FOCUSED, A_DEEP = 8, 9, 10
A_LISTEN = 11
A_SELECT0 = 12  # 12..27
A_MINE0 = 28  # 28 conservative, 29 standard, 30 aggressive
A_STABILIZE = 31
A_REFINE = 32
A_COOLDOWN = 33
A_TOOL = 34
A_PATCH = 35
A_JETTISON0 = 36  # 36..41
A_DOCK = 42
A_SELL0 = 43  # 43..60: commodity (id-43)//3, bucket (id-43)%3
A_FUEL_S, A_FUEL_M, A_FUEL_L = 61, 62, 63
A_KIT, A_STAB, A_DECOY = 64, 65, 66
A_OVERHAUL = 67
A_CASH_OUT = 68
SELL_FRACTIONS = (0.25, 0.5, 1.0)

# --- observation layout -----------------------------------------------------------------------
OBS_CREDITS = 7  # log1p(credits) / log1p(CREDITS_CAP)
OBS_CARGO0 = 8  # 6 commodities
OBS_KITS, OBS_STABS, OBS_DECOYS = 14, 15, 16
OBS_AT_STATION, OBS_SEL_OK = 17, 18
OBS_NB0 = 24  # 6 neighbour slots x 7
NB_FIELDS = 7
OBS_HOME_FUEL, OBS_AFFORD_FUEL = 66, 67
OBS_AST0 = 68  # 16 asteroid slots x 11
AST_FIELDS = 11
OBS_PRICE0, OBS_DPRICE0, OBS_INV0 = 244, 250, 256
OBS_INV_COMMODITIES = (0, 2, 3, 4)

CREDITS_CAP = 1e7


@dataclass(frozen=True)
class Rules:
    """All numbers of one rule set. Tuples are indexed by commodity or by mining mode."""

    name: str
    # behaviour flags (False = v1 behaviour)
    cash_out_station_only: bool = False
    connected_graph: bool = False  # reroute a tree edge whose parent is full instead of dropping it
    net_profit_single_spend: bool = False
    price_obs_over_max: bool = False
    price_delta_over_base: bool = False
    home_fuel_obs: bool = False  # obs 66-67
    invalid_scan_free: bool = False
    cumulative_usage: bool = False  # fuel_used/hull_damage/tool_wear sum every drop

    # prices
    price_base: tuple = (45.0, 55.0, 85.0, 145.0, 210.0, 120.0)
    price_min: tuple = (12.0, 15.0, 20.0, 50.0, 80.0, 30.0)
    price_max: tuple = (180.0, 200.0, 240.0, 320.0, 420.0, 300.0)
    price_delta_scale: float = 100.0  # v1 only; v2 divides by the base price

    # durations
    dt_wide: int = 3
    dt_focused: int = 2
    dt_deep: int = 4
    dt_listen: int = 2
    dt_stabilize: int = 2
    dt_refine: int = 2
    dt_cooldown: int = 2
    dt_tool: int = 2
    dt_patch: int = 2
    dt_dock: int = 1
    dt_overhaul: int = 3

    # fuel costs
    fuel_wide: float = 5.0
    fuel_focused: float = 4.0
    fuel_deep: float = 8.0
    fuel_refine: float = 4.0
    fuel_cooldown: float = 2.0
    fuel_burn: float = 18.0
    travel_mass_factor: float = 0.5  # edge cost x (1 + factor * cargo / CARGO_MAX)

    # heat
    heat_refine: float = 6.0
    heat_cooldown: float = -20.0
    heat_hold: float = -2.5
    heat_dissipation: float = 2.5
    overheat_damage: float = 1.25

    # alert
    alert_burn: float = 10.0
    alert_wide: float = 4.0
    alert_focused: float = 3.0
    alert_deep: float = 6.0
    alert_refine: float = 3.0
    alert_cooldown: float = 1.0
    alert_hold: float = -3.0
    alert_dock: float = -20.0
    alert_jettison: float = -8.0
    alert_pirate: float = 8.0

    # repairs / buffs
    tool_repair: float = 25.0
    hull_repair: float = 20.0
    escape_ticks: int = 4
    stabilize_ticks: int = 6

    # hazards (per tick, times hazard level; also the edge exposure factors)
    hazard_hull: float = 0.7
    hazard_heat: float = 0.5
    hazard_alert: float = 0.8
    hazard_threshold: float = 0.0  # hull damage uses max(0, level - threshold)
    alert_decay: float = 0.0  # passive alert decay per tick

    # pirates
    pirate_bias: float = -4.0
    pirate_intensity: float = 3.0
    pirate_alert: float = 2.2
    pirate_cargo: float = 0.8
    pirate_escape: float = 2.8
    pirate_loss_lo: float = 0.08
    pirate_loss_hi: float = 0.20
    pirate_decoy_p: float = 0.6
    pirate_decoy_mult: float = 0.3
    pirate_hull_lo: float = 1.0
    pirate_hull_hi: float = 4.0

    # mining: conservative / standard / aggressive
    mine_yield: tuple = (0.80, 1.15, 1.55)
    mine_heat: tuple = (2.0, 4.0, 7.0)
    mine_wear: tuple = (0.8, 1.6, 2.8)
    mine_alert: tuple = (1.2, 2.2, 4.0)
    mine_sigma: tuple = (0.05, 0.10, 0.16)
    mine_fracture_bias: tuple = (-0.7, 0.0, 0.8)
    depletion_rate: float = 0.01
    fracture_base: float = -3.1
    fracture_stability: float = 2.5
    fracture_heat: float = 2.2
    fracture_tool: float = 1.5
    fracture_stabilized: float = 1.1
    fracture_damage: float = 12.0
    fracture_hazard_gain: float = 0.1

    # scans: wide / focused / deep
    scan_blend: tuple = (0.22, 0.42, 0.80)
    scan_conf_gain: tuple = (0.10, 0.20, 0.45)
    scan_noise_mult: tuple = (1.35, 1.00, 0.55)
    listen_sigma: float = 0.08

    # refine
    refine_frac: float = 0.15
    refine_gain: float = 0.65

    # market
    slip_k: float = 0.25
    slip_root: float = 0.2
    slip_cap: float = 0.70
    market_inventory_pressure: float = 0.04
    market_sales_pressure: float = 0.05
    market_noise: float = 0.03
    market_sales_tau: float = 14.0
    market_inventory_decay: float = 0.998

    # shop
    fuel_packs: tuple = (120.0, 260.0, 480.0)
    fuel_pack_costs: tuple = (60.0, 120.0, 210.0)
    cost_kit: float = 150.0
    cost_stabilizer: float = 175.0
    cost_decoy: float = 110.0
    cost_overhaul: float = 280.0

    # start loadout
    start_kits: int = 3
    start_stabilizers: int = 2
    start_decoys: int = 1

    # world generation
    hazard_node_p: float = 0.25
    node_hazard_lo: float = 0.05
    node_hazard_hi: float = 0.35
    node_pirate_lo: float = 0.05
    node_pirate_hi: float = 0.30
    hazard_node_extra_hazard: float = 0.25
    hazard_node_extra_pirate: float = 0.12
    edge_fuel_lo: float = 20.0
    edge_fuel_hi: float = 112.0
    edge_threat_sigma: float = 0.05
    edge_time_max: int = 8
    node_count_lo: int = 8
    node_count_hi: int = 32
    asteroid_count_lo: int = 5
    asteroid_count_hi: int = 16
    richness_mu: float = -0.2
    richness_sigma: float = 0.65
    richness_lo: float = 0.2
    richness_hi: float = 4.0
    noise_profile_lo: float = 0.04
    noise_profile_hi: float = 0.22
    start_stability_est: float = 0.5
    start_confidence: float = 0.10
    start_threat_est: float = 0.5
    market_inventory_lo: float = 20.0
    market_inventory_hi: float = 120.0
    market_period_lo: float = 180.0
    market_period_hi: float = 380.0
    market_amp_lo: float = 0.10
    market_amp_hi: float = 0.30

    # reward
    r_extract: float = 0.02
    r_fuel: float = 0.10
    r_time: float = 0.001
    r_wear: float = 0.05
    r_damage: float = 1.0
    r_heat: float = 0.20
    r_scan: float = 0.005
    r_invalid: float = 0.01
    r_pirate: float = 1.0
    r_stranded: float = 50.0
    r_destroyed: float = 100.0
    r_terminal_credits: float = 0.002  # x credits / CREDIT_SCALE when ending intact

    def replace(self, **changes) -> "Rules":
        return dataclasses.replace(self, **changes)


RULES_V1 = Rules(name="v1")

# v2: the fixes of docs/GAME_RULES.md (section 11) plus balance numbers. Every number that differs
# from v1 is listed in docs/ENV.md with the measurement that justified it.
RULES_V2 = Rules(
    name="v2",
    cash_out_station_only=True,
    connected_graph=True,
    net_profit_single_spend=True,
    price_obs_over_max=True,
    price_delta_over_base=True,
    home_fuel_obs=True,
    invalid_scan_free=True,
    cumulative_usage=True,
    # balance (docs/ENV.md, "v2 numbers")
    hazard_hull=0.5,
    hazard_threshold=0.35,
    fracture_hazard_gain=0.05,
    alert_decay=1.0,
    mine_alert=(0.4, 0.8, 2.0),
    pirate_bias=-10.5,
    fracture_base=-10.5,
    fracture_heat=8.0,
    fracture_tool=0.5,
    r_terminal_credits=0.25,
)

RULE_SETS = {"v1": RULES_V1, "v2": RULES_V2}


def get_rules(rules) -> Rules:
    if isinstance(rules, Rules):
        return rules
    try:
        return RULE_SETS[str(rules)]
    except KeyError:
        raise ValueError(f"unknown rules {rules!r}; expected one of {sorted(RULE_SETS)}") from None


class ActionTables:
    """Per-action-id lookup tables so that simple effects cost one gather per step, not one mask
    per action group. Built once per Rules."""

    def __init__(self, r: Rules):
        n = N_ACTIONS
        self.dt = np.ones(n, np.int64)
        self.fuel = np.zeros(n)
        self.alert = np.zeros(n)
        self.heat = np.zeros(n)
        self.scan = np.zeros(n, bool)
        for a, d in ((A_WIDE, r.dt_wide), (A_FOCUSED, r.dt_focused), (A_DEEP, r.dt_deep),
                     (A_LISTEN, r.dt_listen), (A_STABILIZE, r.dt_stabilize),
                     (A_REFINE, r.dt_refine), (A_COOLDOWN, r.dt_cooldown), (A_TOOL, r.dt_tool),
                     (A_PATCH, r.dt_patch), (A_DOCK, r.dt_dock), (A_OVERHAUL, r.dt_overhaul)):
            self.dt[a] = d
        for a, f in ((A_WIDE, r.fuel_wide), (A_FOCUSED, r.fuel_focused), (A_DEEP, r.fuel_deep),
                     (A_REFINE, r.fuel_refine), (A_COOLDOWN, r.fuel_cooldown),
                     (A_BURN, r.fuel_burn)):
            self.fuel[a] = f
        for a, v in ((A_BURN, r.alert_burn), (A_WIDE, r.alert_wide),
                     (A_FOCUSED, r.alert_focused), (A_DEEP, r.alert_deep),
                     (A_REFINE, r.alert_refine), (A_COOLDOWN, r.alert_cooldown),
                     (A_HOLD, r.alert_hold), (A_DOCK, r.alert_dock)):
            self.alert[a] = v
        self.alert[A_JETTISON0:A_JETTISON0 + N_COMMODITIES] = r.alert_jettison
        self.heat[A_REFINE] = r.heat_refine
        self.heat[A_COOLDOWN] = r.heat_cooldown
        self.heat[A_HOLD] = r.heat_hold
        self.scan[[A_WIDE, A_FOCUSED, A_DEEP]] = True
        self.penalty = np.where(self.scan, r.r_scan, 0.0)  # per-decision reward penalty
        # shop: cost and what each purchase adds
        self.cost = np.zeros(n)
        self.fuel_gain = np.zeros(n)
        self.item = np.full(n, -1, np.int64)  # 0 kits, 1 stabilizers, 2 decoys
        for k, a in enumerate((A_FUEL_S, A_FUEL_M, A_FUEL_L)):
            self.cost[a] = r.fuel_pack_costs[k]
            self.fuel_gain[a] = r.fuel_packs[k]
        for k, (a, c) in enumerate(((A_KIT, r.cost_kit), (A_STAB, r.cost_stabilizer),
                                    (A_DECOY, r.cost_decoy))):
            self.cost[a] = c
            self.item[a] = k
        self.cost[A_OVERHAUL] = r.cost_overhaul

"""The game's policies (``--policy masked_mlp`` and ``--policy slots``): the action mask, and an
actor that points at asteroid slots.

Two things a flat MLP over the 260 observation floats learns slowly (docs/BENCHMARKS.md): which
of the 16 asteroid slots is worth mining (an argmax over slots of price x composition x
stability x (1 - depletion)), and which of the 69 actions can do anything in the current state
(most cannot: station actions in the field, mining without a selection, ...).

- Actions that are invalid by the rules (they execute as HOLD with a penalty) or that cannot
  change anything (selling or jettisoning a commodity not in the hold) get a logit of
  ``MASKED_LOGIT``. The mask is a function of the observation alone, so the runners, the learner
  and evaluation all see the same distribution, and a checkpoint needs nothing else to act.
  Purchases are checked against the credits the observation shows (log-scaled, so with a small
  margin) at the prices of the rule set (``rules``), which the plug-in fills in from --env-rules.
- ``slots``: one small encoder, shared by all 16 slots, embeds each slot from its own 11
  features, the 6 prices and composition x price. A slot's "select" logit is a score of its
  embedding against the trunk's state, so preferring the best slot is one learned comparison, not
  16 separate ones. The trunk sees the flat observation plus an attention-pooled summary of the
  slots and the selected slot's embedding (to decide between mining it and selecting a better one).

Both keep the trainer's MLP critic. They follow the trainer's policy convention (``training.policy``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from prospector_game.consts import (
    A_CASH_OUT, A_DECOY, A_DEEP, A_DOCK, A_FOCUSED, A_FUEL_L, A_FUEL_M, A_FUEL_S, A_JETTISON0, A_KIT,
    A_MINE0, A_OVERHAUL, A_PATCH, A_SELECT0, A_SELL0, A_STAB, A_STABILIZE, A_TOOL, A_TRAVEL0,
    A_WIDE, AST_FIELDS, CREDITS_CAP, MAX_ASTEROIDS, MAX_NEIGHBORS, N_ACTIONS, NB_FIELDS, OBS_AST0,
    OBS_AT_STATION, OBS_CARGO0, OBS_CREDITS, OBS_DECOYS, OBS_DIM, OBS_KITS, OBS_NB0, OBS_PRICE0, OBS_SEL_OK,
    OBS_STABS, get_rules,
)
from training.policy import ACTIVATIONS, ActorCritic, mlp, orthogonal_linear

MASKED_LOGIT = -1e9  # exp() underflows to exactly 0 in float32; finite, so 0 * logit stays 0
_N_COMMODITIES = 6
_SLOT_IN = AST_FIELDS + 2 * _N_COMMODITIES
_MARGIN = 0.01  # credits: the observation's log scale rounds to ~1e-5 relative


def check_spaces(env) -> None:
    obs, act = env.single_observation_space, env.single_action_space
    if tuple(getattr(obs, "shape", ())) != (OBS_DIM,) or getattr(act, "n", None) != N_ACTIONS:
        raise ValueError(f"the prospector's policies need its spaces (obs ({OBS_DIM},), Discrete({N_ACTIONS})), "
                         f"got {obs} and {act}")


class ActionMask(nn.Module):
    """obs (B, 260) -> bool (B, 69): True where the action can have an effect under ``rules``."""

    def __init__(self, rules="v2"):
        super().__init__()
        r = get_rules(rules)
        costs = np.zeros(N_ACTIONS, np.float64)
        costs[[A_FUEL_S, A_FUEL_M, A_FUEL_L]] = r.fuel_pack_costs
        costs[[A_KIT, A_STAB, A_DECOY]] = (r.cost_kit, r.cost_stabilizer, r.cost_decoy)
        costs[A_OVERHAUL] = r.cost_overhaul
        self.register_buffer("costs", torch.from_numpy(costs), persistent=False)
        self.cash_out_station_only = bool(r.cash_out_station_only)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        B = obs.shape[0]
        at = obs[:, OBS_AT_STATION] > 0.5
        field = ~at
        sel_ok = obs[:, OBS_SEL_OK] > 0.5
        cargo = obs[:, OBS_CARGO0:OBS_CARGO0 + _N_COMMODITIES] > 0.0
        credits = torch.expm1(obs[:, OBS_CREDITS].double() * math.log1p(CREDITS_CAP))
        m = torch.ones(B, N_ACTIONS, dtype=torch.bool, device=obs.device)
        nb = obs[:, OBS_NB0:OBS_NB0 + MAX_NEIGHBORS * NB_FIELDS].reshape(B, MAX_NEIGHBORS, NB_FIELDS)
        m[:, A_TRAVEL0:A_TRAVEL0 + MAX_NEIGHBORS] = nb[..., 0] > 0.5
        m[:, A_WIDE] = field  # valid at the station, where it does nothing
        m[:, A_FOCUSED] = sel_ok
        m[:, A_DEEP] = sel_ok
        ast = obs[:, OBS_AST0:OBS_AST0 + MAX_ASTEROIDS * AST_FIELDS].reshape(B, MAX_ASTEROIDS, AST_FIELDS)
        m[:, A_SELECT0:A_SELECT0 + MAX_ASTEROIDS] = (ast[..., 0] > 0.5) & (ast[..., 8] < 1.0) & field[:, None]
        m[:, A_MINE0:A_MINE0 + 3] = sel_ok[:, None]
        m[:, A_STABILIZE] = sel_ok & (obs[:, OBS_STABS] > 0.0)
        m[:, A_TOOL] = obs[:, OBS_KITS] > 0.0
        m[:, A_PATCH] = obs[:, OBS_KITS] > 0.0
        m[:, A_JETTISON0:A_JETTISON0 + _N_COMMODITIES] = cargo
        m[:, A_DOCK] = at
        m[:, A_SELL0:A_FUEL_S] = (at[:, None] & cargo).repeat_interleave(3, dim=1)
        afford = credits[:, None] >= self.costs[None, A_FUEL_S:A_OVERHAUL + 1].to(obs.device) + _MARGIN
        m[:, A_FUEL_S:A_OVERHAUL + 1] = at[:, None] & afford
        held = obs[:, [OBS_KITS, OBS_STABS, OBS_DECOYS]] < 1.0  # counts are obs x ITEM_CAP; the shop stops at the cap
        m[:, A_KIT:A_DECOY + 1] &= held
        if self.cash_out_station_only:
            m[:, A_CASH_OUT] = at
        return m


class _MaskedPolicy(ActorCritic):
    """An actor (obs -> raw logits) and the MLP critic; the logits come out float32 with the
    actions that cannot act at MASKED_LOGIT."""

    def __init__(self, actor: nn.Module, hidden, activation: str, rules):
        super().__init__()
        self.actor = actor
        self.critic = mlp(OBS_DIM, hidden, 1, 1.0, activation)
        self.mask = ActionMask(rules)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.actor(hidden).float().masked_fill(~self.mask(hidden), MASKED_LOGIT)


def masked_mlp(env, hidden=(256, 256), activation: str = "tanh", rules="v2") -> nn.Module:
    """The trainer's MLP actor with the actions that cannot act masked (the preset's policy)."""
    check_spaces(env)
    actor = mlp(OBS_DIM, hidden, N_ACTIONS, 0.01, activation)
    return _MaskedPolicy(actor, hidden, activation, rules)


def slots(env, hidden=(256, 256), activation: str = "tanh", rules="v2", slot_dim: int = 32) -> nn.Module:
    """The slot-pointing actor, masked the same way."""
    check_spaces(env)
    actor = SlotActor(int(slot_dim), list(hidden), ACTIVATIONS[activation])
    return _MaskedPolicy(actor, hidden, activation, rules)


class SlotActor(nn.Module):
    """obs (B, 260) -> raw logits (B, 69)."""

    def __init__(self, slot_dim: int, hidden: list[int], activation: type[nn.Module]):
        super().__init__()
        e = slot_dim
        g2 = math.sqrt(2.0)
        self.slot = nn.Sequential(orthogonal_linear(_SLOT_IN, e, g2), activation(),
                                  orthogonal_linear(e, e, g2), activation())
        self.attend = orthogonal_linear(e, 1, 1.0)
        layers: list[nn.Module] = []
        in_dim = OBS_DIM + 2 * e
        for h in hidden:
            layers += [orthogonal_linear(in_dim, h, g2), activation()]
            in_dim = h
        self.trunk = nn.Sequential(*layers)
        self.head = orthogonal_linear(in_dim, N_ACTIONS, 0.01)
        # score(slot, state) = w . act(A z + B h): the state's half is computed once, not per slot
        self.score_slot = orthogonal_linear(e, e, g2)
        self.score_state = orthogonal_linear(in_dim, e, g2, bias=False)
        self.score_act = activation()
        self.score_out = orthogonal_linear(e, 1, 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        s = x[:, OBS_AST0:OBS_AST0 + MAX_ASTEROIDS * AST_FIELDS].reshape(B, MAX_ASTEROIDS, AST_FIELDS)
        price = x[:, OBS_PRICE0:OBS_PRICE0 + _N_COMMODITIES].unsqueeze(1).expand(-1, MAX_ASTEROIDS, -1)
        z = self.slot(torch.cat([s, price, s[..., 1:1 + _N_COMMODITIES] * price], dim=-1))  # (B, 16, e)
        valid = s[..., 0] > 0.5
        att = self.attend(z).squeeze(-1).float().masked_fill(~valid, MASKED_LOGIT)
        w = torch.softmax(att, dim=-1) * valid.any(dim=-1, keepdim=True)
        pooled = (w.unsqueeze(-1).to(z.dtype) * z).sum(dim=1)
        selected = (z * s[..., 10:11].to(z.dtype)).sum(dim=1)
        h = self.trunk(torch.cat([x.to(z.dtype), pooled, selected], dim=-1))
        score = self.score_out(self.score_act(self.score_slot(z) + self.score_state(h).unsqueeze(1)))
        logits = self.head(h).float()
        return torch.cat([logits[:, :A_SELECT0], logits[:, A_SELECT0:A_SELECT0 + MAX_ASTEROIDS]
                          + score.squeeze(-1).float(), logits[:, A_SELECT0 + MAX_ASTEROIDS:]], dim=-1)

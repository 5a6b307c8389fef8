"""The prospector's actor: an asteroid-slot encoder that points at slots, and action masking.

Two things a flat MLP over the 260 observation floats learns slowly (docs/BENCHMARKS.md,
"Learning"): which of the 16 asteroid slots is worth mining (an argmax over slots of price x
composition x stability x (1 - depletion)), and which of the 69 actions can do anything in the
current state (most cannot: station actions in the field, mining without a selection, ...).

- One small encoder, shared by all 16 slots, embeds each slot from its own 11 features, the 6
  prices and composition x price. A slot's "select" logit is a score of its embedding against
  the trunk's state, so preferring the best slot is one learned comparison, not 16 separate ones.
  The trunk sees the flat observation plus an attention-pooled summary of the slots and the
  selected slot's embedding (to decide between mining it and selecting a better one).
- Actions that are invalid by the rules (they execute as HOLD with a penalty) or that cannot
  change anything (selling or jettisoning a commodity not in the hold) get a logit of
  ``MASKED_LOGIT``. The mask is a function of the observation alone, so the runners, the learner
  and evaluation all see the same distribution, and a checkpoint needs nothing else to act.
  Purchases are checked against the credits the observation shows (log-scaled, so with a small
  margin); the costs are stored in the spec, so they follow the rules the policy was trained on.
- A prior (optional, ``--policy-prior``) makes either actor residual: a scripted bot's action for
  the observation gets a fixed bonus on its logit. The untrained policy is then a softened copy of
  the bot, and PPO only has to learn where to depart from it, not the whole game from nothing.
  The bot reads the observation alone, so like the mask it needs nothing beyond the spec.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training.envs.prospector_consts import (
    A_CASH_OUT, A_DECOY, A_DEEP, A_DOCK, A_FOCUSED, A_FUEL_L, A_FUEL_M, A_FUEL_S, A_JETTISON0, A_KIT,
    A_MINE0, A_OVERHAUL, A_PATCH, A_SELECT0, A_SELL0, A_STAB, A_STABILIZE, A_TOOL, A_TRAVEL0,
    A_WIDE, AST_FIELDS, CREDITS_CAP, MAX_ASTEROIDS, MAX_NEIGHBORS, N_ACTIONS, NB_FIELDS, OBS_AST0,
    OBS_AT_STATION, OBS_CARGO0, OBS_CREDITS, OBS_DECOYS, OBS_DIM, OBS_KITS, OBS_NB0, OBS_PRICE0, OBS_SEL_OK,
    OBS_STABS, get_rules,
)
from training.policy import orthogonal_linear

MASKED_LOGIT = -1e9  # exp() underflows to exactly 0 in float32; finite, so 0 * logit stays 0
_N_COMMODITIES = 6
_SLOT_IN = AST_FIELDS + 2 * _N_COMMODITIES
_MARGIN = 0.01  # credits: the observation's log scale rounds to ~1e-5 relative


def encoder_spec(rules="v2", slot_dim: int = 32, slots: bool = True, prior: str | None = None,
                 prior_logit: float = 0.0) -> dict:
    """The JSON-serialisable part of a policy spec that rebuilds this actor. ``slots`` False: the
    plain MLP actor over the flat observation, with the action mask only. ``prior``: a scripted
    bot whose action gets ``prior_logit`` added to its logit (a residual policy)."""
    r = get_rules(rules)
    costs = np.zeros(N_ACTIONS, np.float64)
    costs[[A_FUEL_S, A_FUEL_M, A_FUEL_L]] = r.fuel_pack_costs
    costs[[A_KIT, A_STAB, A_DECOY]] = (r.cost_kit, r.cost_stabilizer, r.cost_decoy)
    costs[A_OVERHAUL] = r.cost_overhaul
    return {
        "kind": "prospector",
        "slot_dim": int(slot_dim),
        "slots": bool(slots),
        "costs": [float(c) for c in costs],
        "cash_out_station_only": bool(r.cash_out_station_only),
        **({"prior": str(prior), "prior_logit": float(prior_logit), "rules": r.name} if prior else {}),
    }


def check_spaces(obs_shape, action: dict) -> None:
    if tuple(obs_shape) != (OBS_DIM,) or action.get("kind") != "discrete" or action.get("n") != N_ACTIONS:
        raise ValueError(f"the prospector policy needs the prospector's spaces (obs ({OBS_DIM},), "
                         f"Discrete({N_ACTIONS})), got obs {tuple(obs_shape)} and {action}")


def action_mask(obs: torch.Tensor, encoder: dict) -> torch.Tensor:
    """obs (B, 260) float -> bool (B, 69): True where the action can have an effect."""
    B = obs.shape[0]
    at = obs[:, OBS_AT_STATION] > 0.5
    field = ~at
    sel_ok = obs[:, OBS_SEL_OK] > 0.5
    cargo = obs[:, OBS_CARGO0:OBS_CARGO0 + _N_COMMODITIES] > 0.0
    credits = torch.expm1(obs[:, OBS_CREDITS].double() * math.log1p(CREDITS_CAP))
    costs = torch.tensor(encoder["costs"], dtype=torch.float64, device=obs.device)
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
    afford = credits[:, None] >= costs[None, A_FUEL_S:A_OVERHAUL + 1] + _MARGIN
    m[:, A_FUEL_S:A_OVERHAUL + 1] = at[:, None] & afford
    held = obs[:, [OBS_KITS, OBS_STABS, OBS_DECOYS]] < 1.0  # counts are obs x ITEM_CAP; the shop stops at the cap
    m[:, A_KIT:A_DECOY + 1] &= held
    if encoder["cash_out_station_only"]:
        m[:, A_CASH_OUT] = at
    return m


def prior_actions(obs: torch.Tensor, encoder: dict) -> torch.Tensor | None:
    """(B,) int64: the prior bot's action for each observation; None without a prior."""
    if not encoder.get("prior"):
        return None
    from training.envs.bots import make_bots

    bot = make_bots(encoder["rules"])[encoder["prior"]]
    return torch.from_numpy(bot(obs.detach().float().cpu().numpy())).to(obs.device)


def _finish(logits: torch.Tensor, x: torch.Tensor, encoder: dict, prior: torch.Tensor | None) -> torch.Tensor:
    """Masked float32 logits, the prior's bonus added (``prior``: its actions, if already known)."""
    logits = logits.float()
    if encoder.get("prior"):
        acts = prior_actions(x, encoder) if prior is None else prior
        bonus = torch.zeros_like(logits).scatter_(1, acts[:, None].long(), float(encoder["prior_logit"]))
        logits = logits + bonus
    return logits.masked_fill(~action_mask(x, encoder), MASKED_LOGIT)


class MaskedMLPActor(nn.Module):
    """obs (B, 260) -> the logits (B, 69) of the plain actor MLP ``mlp``, masked as ``action_mask`` says."""

    def __init__(self, encoder: dict, mlp: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.mlp = mlp

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        return _finish(self.mlp(x), x, self.encoder, prior)


class ProspectorActor(nn.Module):
    """obs (B, 260) -> masked logits (B, 69)."""

    def __init__(self, encoder: dict, hidden: list[int], activation: type[nn.Module]):
        super().__init__()
        self.encoder = encoder
        e = int(encoder["slot_dim"])
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

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
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
        logits = torch.cat([logits[:, :A_SELECT0], logits[:, A_SELECT0:A_SELECT0 + MAX_ASTEROIDS]
                            + score.squeeze(-1).float(), logits[:, A_SELECT0 + MAX_ASTEROIDS:]], dim=-1)
        return _finish(logits, x, self.encoder, prior)

"""Advantage estimators over a rollout (Ray-free, NumPy): GAE, and V-trace for overlapped rounds.

Rollout layout: arrays are (T, N) = (time, env); index t holds the transition taken
from observation t, so ``rewards[t]``, ``terminals[t]`` and ``truncations[t]`` are the
outcome of action t (gymnasium convention, not PufferLib's shifted one).

Invalid ("dummy") steps: PufferLib's Serial backend spends one step resetting a
finished gym env; that step carries no real transition. Marking it ``valid=False``
gives it advantage 0, stops the GAE carry at it, and gives it weight 0 in every loss.
"""

from __future__ import annotations

import numpy as np


def _check_shapes(named: dict[str, np.ndarray], last_values: np.ndarray) -> tuple[int, int]:
    shape = named["values"].shape
    if len(shape) != 2:
        raise ValueError(f"values must be (T, N), got shape {shape}")
    for name, arr in named.items():
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, expected {shape} like values")
    if last_values.shape != (shape[1],):
        raise ValueError(f"last_values has shape {last_values.shape}, expected ({shape[1]},)")
    return shape


def _advantage_scan(rewards, values, terminals, truncations, valid, bootstrap_values, last_values,
                    gamma, gae_lambda, ratios=None, rho_clip=1.0, c_clip=1.0):
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    rewards, values, bootstrap_values, last_values = map(f32, (rewards, values, bootstrap_values, last_values))
    terminals, truncations, valid = (np.asarray(a).astype(bool) for a in (terminals, truncations, valid))
    named = dict(rewards=rewards, values=values, terminals=terminals, truncations=truncations,
                 valid=valid, bootstrap_values=bootstrap_values)
    if ratios is not None:
        named["ratios"] = ratios = f32(ratios)
    T, N = _check_shapes(named, last_values)
    gamma, gae_lambda = np.float32(gamma), np.float32(gae_lambda)

    advantages = np.zeros((T, N), dtype=np.float32)
    carry = np.zeros(N, dtype=np.float32)
    for t in reversed(range(T)):
        next_values = last_values if t == T - 1 else values[t + 1]
        nv = np.where(terminals[t], np.float32(0.0),
                      np.where(truncations[t], bootstrap_values[t], next_values))
        # The carry belongs to the next episode once this step ended one.
        carry = np.where(terminals[t] | truncations[t], np.float32(0.0), carry)
        delta = rewards[t] + gamma * nv - values[t]
        if ratios is None:
            adv = delta + gamma * gae_lambda * carry
        else:
            rho = np.minimum(ratios[t], np.float32(rho_clip))
            c = np.minimum(ratios[t], np.float32(c_clip))
            adv = rho * delta + gamma * gae_lambda * c * carry
        # A dummy step also passes a zero carry backwards: it is not part of any episode.
        carry = np.where(valid[t], adv, np.float32(0.0)).astype(np.float32)
        advantages[t] = carry
    return advantages, (advantages + values).astype(np.float32)


def compute_gae(rewards, values, terminals, truncations, valid, bootstrap_values, last_values,
                gamma: float, gae_lambda: float) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation with terminal/truncation handling -> (advantages, returns).

    Per env, backwards over t: next value nv = 0 if terminals[t], bootstrap_values[t]
    (value of the obs the episode was truncated on) if truncations[t], else values[t+1]
    (last_values at t = T-1). The carry from t+1 is cut on either kind of done.
      delta_t = r_t + gamma * nv - V_t
      A_t     = delta_t + gamma * lambda * A_{t+1}      (A_t = 0 where not valid[t])
    returns = advantages + values. All (T, N) float32 except last_values (N,).
    """
    return _advantage_scan(rewards, values, terminals, truncations, valid, bootstrap_values,
                           last_values, gamma, gae_lambda)


def compute_vtrace(rewards, values, terminals, truncations, valid, bootstrap_values, last_values,
                   ratios, gamma: float, gae_lambda: float, rho_clip: float = 1.0,
                   c_clip: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Off-policy-corrected GAE, as PufferLib's ``compute_puff_advantage`` -> (advantages, returns).

    ``ratios`` (T, N) are pi(a_t|s_t) / mu(a_t|s_t) for the learner policy pi and the
    behaviour policy mu that collected the data. With rho_t = min(ratio_t, rho_clip)
    and c_t = min(ratio_t, c_clip), and nv / done-cutting exactly as in compute_gae:
      A_t = rho_t * (r_t + gamma * nv - V_t) + gamma * lambda * c_t * A_{t+1}
    This is IMPALA's v_s - V(s) with truncated traces c_t scaled by lambda; with all
    ratios 1 (and clips >= 1) it reduces to compute_gae. returns = advantages + values
    are the V-trace value targets.
    """
    return _advantage_scan(rewards, values, terminals, truncations, valid, bootstrap_values,
                           last_values, gamma, gae_lambda, ratios, rho_clip, c_clip)

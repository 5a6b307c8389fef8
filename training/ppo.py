"""Ray-free PPO math: losses, minibatching, the update loop (advantages: ``training.advantages``).

A flat batch holds the rows of a (T, N) rollout time-major (row t * N + n); rows with
``valid`` 0 (PufferLib's dummy reset steps, absent agents) have weight 0 in every loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from training.adam import adam_step


def minibatch_indices(batch_size: int, num_minibatches: int,
                      generator: np.random.Generator) -> list[np.ndarray]:
    """A fresh permutation of range(batch_size) split into num_minibatches parts, equal when they
    divide it (the configuration checks that full rounds do); a run's shortened last round may
    give parts that differ by one row."""
    if num_minibatches <= 0:
        raise ValueError(f"num_minibatches must be positive, got {num_minibatches}")
    if batch_size < num_minibatches:
        raise ValueError(f"batch_size {batch_size} < num_minibatches {num_minibatches}: "
                         "a minibatch would be empty")
    return np.array_split(generator.permutation(batch_size), num_minibatches)


def env_column_minibatches(T: int, N: int, num_minibatches: int,
                           generator: np.random.Generator) -> list[np.ndarray] | None:
    """Minibatches of whole env columns: the flat rows t * N + n (time-major, as the learner
    flattens a (T, N) rollout) of a random split of the N envs, each laid out (T, N / num_minibatches)
    row-major. None when N is not a multiple of num_minibatches. A minibatch holds every step of its
    envs, so trajectory-wide targets (V-trace) can be computed from that minibatch alone."""
    if num_minibatches <= 0 or N % num_minibatches:
        return None
    steps = np.arange(T)[:, None] * N
    return [(steps + cols[None, :]).ravel() for cols in np.split(generator.permutation(N), num_minibatches)]


def _wmean(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # An all-invalid minibatch yields 0 instead of 0/0.
    return (x * weights).sum() / weights.sum().clamp(min=1.0)


def ppo_losses(new_logprob, old_logprob, entropy, new_value, old_value, advantages, returns,
               weights, clip_coef: float, vf_clip_coef: float, norm_adv: bool = True, pg_weights=None,
               totals: dict | None = None, is_weights=None) -> dict:
    """CleanRL's PPO losses as weighted means over entries with weights > 0.

    Returns tensors policy_loss, value_loss, entropy (differentiable) and approx_kl,
    clipfrac (detached diagnostics). Advantages are normalised over the valid entries
    of this minibatch with the unbiased std, as CleanRL's ``.std()`` does.
    ``pg_weights`` (default ``weights``) restricts the policy terms (policy loss, entropy,
    advantage normalisation, approx_kl, clipfrac) to the entries the policy itself acted on;
    the value loss keeps ``weights``.
    ``is_weights`` (overlapped mode's decoupled objective): per-row importance weights
    pi_prox / mu that scale each row's clipped policy term; ``old_logprob`` is then pi_prox's,
    so the trust region is centred on the policy the update starts from, not on the older one
    that acted (Hilton et al. 2021, "Batch size-invariance for policy optimization").
    ``totals`` (data-parallel learners, ``training.distributed``): these rows are one learner's share
    of a minibatch spread over several; the weight sums ``n`` (policy terms) and ``v_n`` (value
    loss) and the advantages' ``adv_mean`` and ``adv_var`` are the whole minibatch's, so every
    loss is this share's part of the whole minibatch's mean, and the learners' parts add up to it.
    """
    if totals is not None:
        return _ppo_losses_share(new_logprob, old_logprob, entropy, new_value, old_value, advantages, returns,
                                 weights, clip_coef, vf_clip_coef, norm_adv, pg_weights, totals)
    weights = weights.to(new_logprob.dtype)
    value_weights = weights
    if pg_weights is not None:
        weights = pg_weights.to(new_logprob.dtype)
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()

    if norm_adv:
        n = weights.sum()
        mean = _wmean(advantages, weights)
        var = (weights * (advantages - mean) ** 2).sum() / (n - 1.0).clamp(min=1.0)
        advantages = (advantages - mean) / (var.sqrt() + 1e-8)

    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef)
    pg_loss = torch.max(pg_loss1, pg_loss2)
    if is_weights is not None:
        pg_loss = pg_loss * is_weights
    policy_loss = _wmean(pg_loss, weights)

    v_loss_unclipped = (new_value - returns) ** 2
    if vf_clip_coef is not None and vf_clip_coef > 0:
        v_clipped = old_value + torch.clamp(new_value - old_value, -vf_clip_coef, vf_clip_coef)
        v_loss_max = torch.max(v_loss_unclipped, (v_clipped - returns) ** 2)
    else:
        v_loss_max = v_loss_unclipped
    value_loss = 0.5 * _wmean(v_loss_max, value_weights)

    with torch.no_grad():
        approx_kl = _wmean((ratio - 1.0) - logratio, weights)
        clipfrac = _wmean(((ratio - 1.0).abs() > clip_coef).to(weights.dtype), weights)

    return {"policy_loss": policy_loss, "value_loss": value_loss,
            "entropy": _wmean(entropy, weights), "approx_kl": approx_kl, "clipfrac": clipfrac}


def _ppo_losses_share(new_logprob, old_logprob, entropy, new_value, old_value, advantages, returns,
                      weights, clip_coef, vf_clip_coef, norm_adv, pg_weights, totals) -> dict:
    """``ppo_losses`` of one learner's rows with the whole minibatch's sums (``totals``)."""
    value_weights = weights = weights.to(new_logprob.dtype)
    if pg_weights is not None:
        weights = pg_weights.to(new_logprob.dtype)
    n, v_n = totals["n"].clamp(min=1.0), totals["v_n"].clamp(min=1.0)
    part = lambda x, w, den: (x * w).sum() / den  # noqa: E731
    logratio = new_logprob - old_logprob
    ratio = logratio.exp()
    if norm_adv:
        advantages = (advantages - totals["adv_mean"]) / (totals["adv_var"].sqrt() + 1e-8)
    pg_loss = torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1.0 - clip_coef, 1.0 + clip_coef))
    v_loss = (new_value - returns) ** 2
    if vf_clip_coef is not None and vf_clip_coef > 0:
        v_clipped = old_value + torch.clamp(new_value - old_value, -vf_clip_coef, vf_clip_coef)
        v_loss = torch.max(v_loss, (v_clipped - returns) ** 2)
    with torch.no_grad():
        approx_kl = part((ratio - 1.0) - logratio, weights, n)
        clipfrac = part(((ratio - 1.0).abs() > clip_coef).to(weights.dtype), weights, n)
    return {"policy_loss": part(pg_loss, weights, n), "value_loss": 0.5 * part(v_loss, value_weights, v_n),
            "entropy": part(entropy, weights, n), "approx_kl": approx_kl, "clipfrac": clipfrac}


def explained_variance(values, returns, weights=None) -> float:
    """1 - Var[R - V] / Var[R] over entries with weight > 0 (population variances).

    NaN when Var[R] is 0 (e.g. all returns equal) or nothing is valid: "undefined",
    not "perfect", so callers should log it as-is rather than treat it as a number.
    """
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    returns = torch.as_tensor(returns, dtype=torch.float64).flatten()
    mask = torch.ones_like(values, dtype=torch.bool) if weights is None \
        else torch.as_tensor(weights).flatten() > 0
    v, r = values[mask], returns[mask]
    if r.numel() == 0:
        return float("nan")
    var_r = r.var(unbiased=False)
    if var_r == 0:
        return float("nan")
    return float(1.0 - (r - v).var(unbiased=False) / var_r)


_BATCH_KEYS = ("obs", "actions", "logprobs", "values", "advantages", "returns", "valid")


def forward_float32(policy: nn.Module, obs: torch.Tensor, amp_dtype: torch.dtype | None = None,
                    prior: torch.Tensor | None = None, state: dict | None = None):
    """policy(obs), optionally under autocast; the outputs come back as float32 so that the
    log-softmax, the ratios and the losses keep full precision whatever the matmuls used.
    ``prior``: a residual policy's prior actions for these rows (``Agent.prior_actions``).
    ``state``: a recurrent policy's sequences (``Agent.forward``)."""
    kwargs = {} if state is None else {"state": state}
    args = (obs,) if prior is None else (obs, prior)
    if amp_dtype is None:
        return policy(*args, **kwargs)
    with torch.autocast(obs.device.type, dtype=amp_dtype):
        params, value = policy(*args, **kwargs)
    params = tuple(p.float() for p in params) if isinstance(params, tuple) else params.float()
    return params, value.float()


def ppo_update(policy: nn.Module, optimizer, batch: dict, *,
               update_epochs: int, num_minibatches: int, clip_coef: float, vf_clip_coef: float,
               ent_coef: float, vf_coef: float, max_grad_norm: float | None, norm_adv: bool = True,
               target_kl: float | None = None, generator: np.random.Generator,
               distill_coef: float = 0.0, amp_dtype: torch.dtype | None = None,
               pg_coef: float = 1.0, before_minibatch=None, in_pass_targets=None,
               sequences: tuple[int, int] | None = None, data_parallel=None) -> dict[str, float]:
    """update_epochs passes of shuffled minibatch PPO steps on a flat batch (B, ...).

    batch: torch tensors keyed obs, actions, logprobs, values, advantages, returns, valid
    (valid: bool or 0/1). Early stop (CleanRL): after an epoch whose last minibatch had
    approx_kl > target_kl. Returned losses are means over the minibatch updates done;
    grad_norm is the mean pre-clip global norm (it can exceed max_grad_norm, the step
    cannot); explained_variance uses the pre-update values (NaN if returns are constant).
    max_grad_norm None or <= 0 disables clipping.
    batch["pg_valid"] (optional, 0/1 per row) limits the policy terms to the rows the policy acted on
    (``ppo_losses``' pg_weights): kickstarting's roll-ins, where the teacher played some steps.
    batch["prior_actions"] (optional): a residual policy's prior actions per row, passed to its
    forward so the bot is not run again for every minibatch and epoch.
    distill_coef > 0 with batch["teacher_actions"] adds kickstarting's distillation term,
    distill_coef * mean(-log pi(teacher action | s)) over valid entries.
    pg_coef 0 drops the clipped policy-gradient term (the kickstarting warm-up, where the batch's
    actions are the teacher's, not the policy's); policy_loss, approx_kl and clipfrac are then None.
    amp_dtype (torch.bfloat16): the policy's forward and backward run under autocast in that
    dtype; the losses, the gradients' clipping and Adam stay float32.
    before_minibatch: called with no argument before every minibatch step (the learner actor
    adjusts its thread count there; it must not touch the policy or the batch).
    in_pass_targets (groups, fn): the advantages, returns and values are not in the batch yet. The
    first epoch steps through the minibatches ``groups`` (flat row indices) in order, and each
    step first calls fn(k, logprob, value) with the detached log-probs of the taken actions and
    the values of groups[k] under the current weights (the step's own forward pass); fn returns
    a dict of that minibatch's rows of batch keys (advantages, returns, values; overlapped mode
    also logprobs and is_weights), which are written into the batch and used by this step and
    every later epoch. Overlapped mode computes V-trace this way without a separate
    re-evaluation pass over the batch (see env_column_minibatches).
    batch["is_weights"] (optional): ``ppo_losses``' is_weights.
    sequences (T, N): the policy is recurrent. Every minibatch is a set of whole env columns
    (env_column_minibatches), replayed through time from batch["state"] (each key (N, ...), the
    state each column started from) with batch["resets"] (B,) zeroing it where an episode began.
    A minibatch whose loss or gradient norm is not finite takes no optimizer step (the weights and
    Adam's moments stay as they were); ``nonfinite_minibatches`` counts them, and the means above
    are over the other minibatches.
    No host synchronisation per minibatch: the step is skipped on the device (``adam_step``'s
    found_inf, as AMP's GradScaler does), the loss sums and the non-finite count stay device tensors,
    and the update synchronises once, at its end (plus once per epoch with ``target_kl``, and in
    ``in_pass_targets``' fn, which computes V-trace on the host).
    data_parallel (a ``training.distributed.DataParallel``): this learner holds env columns
    [rank * N, (rank + 1) * N) of a batch of world * N columns (``batch`` is its (T, N) share, flat,
    time-major). Every learner draws the same global minibatches (same generator), trains on its rows
    of each, with the whole minibatch's weight sums and advantage statistics, and the gradients are
    summed over the learners before clipping: the update is one learner's on the whole batch, up to
    float rounding. Not with ``in_pass_targets`` or ``sequences``.
    """
    missing = [k for k in _BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(f"batch is missing keys {missing}")
    batch_size = batch["obs"].shape[0]
    for k in _BATCH_KEYS:
        if batch[k].shape[0] != batch_size:
            raise ValueError(f"batch[{k!r}] has {batch[k].shape[0]} rows, obs has {batch_size}")
    weights = batch["valid"].to(torch.float32)
    pg_weights = batch["pg_valid"].to(torch.float32) if "pg_valid" in batch else None
    clip_norm = max_grad_norm if max_grad_norm is not None and max_grad_norm > 0 else float("inf")
    params = [p for p in policy.parameters() if p.requires_grad]

    distill = distill_coef > 0 and "teacher_actions" in batch
    prior = batch.get("prior_actions")
    dp = data_parallel
    if dp is not None and (in_pass_targets is not None or sequences is not None):
        raise ValueError("data-parallel updates take neither in_pass_targets nor sequences")
    device = batch["obs"].device
    # device accumulators, float64 as Python's floats were: the same sums, bit for bit
    sums = torch.zeros(len(_STAT_KEYS) + 1, dtype=torch.float64, device=device)  # + grad_norm
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)
    zero = torch.zeros((), dtype=torch.float32, device=device)
    tried = 0
    for epoch in range(update_epochs):
        approx_kl = zero  # of the epoch's last minibatch that stepped
        in_pass = in_pass_targets is not None and epoch == 0
        if in_pass:
            groups = in_pass_targets[0]
        elif sequences is not None:
            groups = env_column_minibatches(*sequences, num_minibatches, generator)
        elif dp is not None:
            groups = dp.local_rows(minibatch_indices(batch_size * dp.world, num_minibatches, generator))
        else:
            groups = minibatch_indices(batch_size, num_minibatches, generator)
        # every minibatch's row indices reach the device in one copy per epoch
        bounds = np.cumsum([0] + [len(g) for g in groups])
        all_idx = torch.from_numpy(np.concatenate(groups).astype(np.int64, copy=False)).to(device)
        idxs = [all_idx[bounds[k]:bounds[k + 1]] for k in range(len(groups))]
        totals = None if dp is None else dp.minibatch_totals(
            idxs, weights, weights if pg_weights is None else pg_weights, batch["advantages"], norm_adv)
        for k, idx in enumerate(idxs):
            if before_minibatch is not None:
                before_minibatch()
            # one forward pass serves both the taken actions and (kickstarting) the teacher's
            dist_params, new_value = forward_float32(policy, batch["obs"][idx], amp_dtype,
                                                     None if prior is None else prior[idx],
                                                     None if sequences is None else _sequence_state(batch, idx, sequences[0]))
            new_logprob, entropy = policy.logprob_entropy(dist_params, batch["actions"][idx])
            if in_pass:
                for key, t in in_pass_targets[1](k, new_logprob.detach(), new_value.detach()).items():
                    batch[key][idx] = t
            losses = ppo_losses(new_logprob, batch["logprobs"][idx], entropy, new_value,
                                batch["values"][idx], batch["advantages"][idx], batch["returns"][idx],
                                weights[idx], clip_coef, vf_clip_coef, norm_adv,
                                pg_weights=None if pg_weights is None else pg_weights[idx],
                                totals=None if totals is None else totals[k],
                                is_weights=batch["is_weights"][idx] if "is_weights" in batch else None)
            loss = pg_coef * losses["policy_loss"] - ent_coef * losses["entropy"] + vf_coef * losses["value_loss"]
            if distill:
                teacher_logprob, _ = policy.logprob_entropy(dist_params, batch["teacher_actions"][idx])
                # a teacher action the policy gives probability 0 (one it masks) cannot be learned: skip it
                w = weights[idx] * (teacher_logprob.exp() > 0)
                losses["distill_loss"] = -(teacher_logprob * w).sum() / w.sum().clamp(min=1.0)
                loss = loss + distill_coef * losses["distill_loss"]

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            packed = torch.stack([loss.detach(), *(losses[key].detach() if key in losses else zero
                                                   for key in _STAT_KEYS)])
            if dp is not None:  # the learners' gradients and loss parts summed: the whole minibatch's
                packed = dp.all_reduce_gradients(params, packed)
            grad_norm = nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
            # a non-finite step would spread NaN to every weight: the optimizer skips it on the device
            found_inf = (~(torch.isfinite(packed[0]) & torch.isfinite(grad_norm))).to(torch.float32)
            adam_step(optimizer, found_inf)
            stepped = found_inf == 0
            values = torch.cat([packed[1:], grad_norm.detach().reshape(1).to(packed.dtype)]).to(torch.float64)
            sums += torch.where(stepped, values, 0.0)
            nonfinite += (~stepped).to(torch.int64)
            approx_kl = torch.where(stepped, packed[1 + _STAT_KEYS.index("approx_kl")], approx_kl)
            tried += 1
        if target_kl is not None and float(approx_kl) > target_kl:  # one synchronisation per epoch, only here
            break

    nonfinite = int(nonfinite)  # the update's one synchronisation
    updates = tried - nonfinite
    means = {k: v / max(updates, 1) for k, v in zip((*_STAT_KEYS, "grad_norm"), sums.tolist())}
    stats = {k: means[k] for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "grad_norm",
                                   "distill_loss")}
    if not distill:
        del stats["distill_loss"]
    if pg_coef == 0:  # the batch's log-probs are not the acting policy's: ratio statistics mean nothing
        stats.update(policy_loss=None, approx_kl=None, clipfrac=None)
    stats["explained_variance"] = (explained_variance(batch["values"], batch["returns"], weights) if dp is None
                                   else dp.explained_variance(batch["values"], batch["returns"], weights))
    stats["num_minibatch_updates"] = updates
    stats["nonfinite_minibatches"] = nonfinite
    return stats


_STAT_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "distill_loss")


def _sequence_state(batch: dict, idx: torch.Tensor, T: int) -> dict:
    """The starting state and resets of the env columns whose rows (laid out (T, n)) are ``idx``."""
    n = idx.numel() // T
    state = {k: v[idx[:n]] for k, v in batch["state"].items()}  # row t = 0 of column j is column j
    state["resets"] = batch["resets"][idx].reshape(T, n)
    return state


def linear_lr(initial_lr: float, update_index: int, total_updates: int, anneal: bool = True) -> float:
    """CleanRL's linear annealing with a 0-based update_index: initial_lr at update 0,
    initial_lr / total_updates at the last update, clamped to >= 0 beyond it."""
    if not anneal:
        return float(initial_lr)
    if total_updates <= 0:
        raise ValueError(f"total_updates must be positive when annealing, got {total_updates}")
    frac = max(0.0, 1.0 - update_index / total_updates)
    return float(initial_lr) * min(frac, 1.0)

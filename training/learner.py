"""PPO learner state and one update per collection round (no Ray here).

Holds the policy, the Adam optimizer and the linear LR schedule; ``learn`` takes the runners'
rollouts (each (T, N_i, ...)), joins them along the env axis, computes advantages and runs the
PPO epochs. ``state_dict``/``load_state_dict`` carry everything an exact resume needs.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from training.adam import Adam
from training.agent import build_agent, get_weights, make_spec
from training.config import TrainConfig, check_env_columns
from training.hardware import native_bfloat16
from training.normalization import Moments, RewardScaler
from training.advantages import compute_gae, compute_vtrace
from training.ppo import env_column_minibatches, forward_float32, linear_lr, ppo_update
from training.recurrent import sequence_resets

ROLLOUT_KEYS_TN = ("obs", "actions", "logprobs", "values", "rewards", "terminals", "truncations", "valid",
                   "bootstrap_values")


def join_rollouts(rollouts: list[dict]) -> dict:
    """Concatenate runners' rollouts along the env axis (axis 1; axis 0 for last_values)."""
    if len(rollouts) == 1:  # no copy: one runner's arrays, often read-only views of Ray's object store
        joined = {k: rollouts[0][k] for k in ROLLOUT_KEYS_TN}
    else:
        joined = {k: np.concatenate([r[k] for r in rollouts], axis=1) for k in ROLLOUT_KEYS_TN}
    joined["last_values"] = np.concatenate([r["last_values"] for r in rollouts], axis=0)
    if all("teacher_actions" in r for r in rollouts):
        joined["teacher_actions"] = np.concatenate([r["teacher_actions"] for r in rollouts], axis=1)
    joined["driven"] = all(r.get("driven", False) for r in rollouts)
    if any("teacher_played" in r for r in rollouts):  # roll-ins: per step, not whole rounds
        joined["teacher_played"] = np.concatenate(
            [r.get("teacher_played", np.zeros(r["valid"].shape, bool)) for r in rollouts], axis=1)
    if "state" in rollouts[0]:  # a recurrent policy's starting states, one row per env
        joined["state"] = {k: np.concatenate([r["state"][k] for r in rollouts], axis=0) for k in rollouts[0]["state"]}
    return joined


def slice_columns(b: dict, lo: int, hi: int) -> dict:
    """Env columns [lo, hi) of joined rollouts (``join_rollouts``): a data-parallel learner's share."""
    out = {k: v[:, lo:hi] for k, v in b.items() if k in (*ROLLOUT_KEYS_TN, "teacher_actions", "teacher_played")}
    out["last_values"] = b["last_values"][lo:hi]
    out["driven"] = b["driven"]
    if "state" in b:
        out["state"] = {k: v[lo:hi] for k, v in b["state"].items()}
    return out


def to_device(t: torch.Tensor, device: torch.device, dtype=None) -> torch.Tensor:
    """``t`` on ``device``: to a CUDA device through pinned host memory, without waiting for the copy
    (the stream orders it before any use; the caching host allocator keeps the pinned buffer alive
    until it is done). Elsewhere, ``Tensor.to``."""
    if device.type == "cuda":
        if dtype is not None and dtype != t.dtype:
            t = t.to(dtype)
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, dtype=dtype)


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def resolve_precision(requested: str, device: str) -> torch.dtype | None:
    """The autocast dtype of the learner's update, or None for plain float32."""
    if requested == "bfloat16" or (requested == "auto" and native_bfloat16(device)):
        return torch.bfloat16
    return None


# Updates in a row whose every minibatch had a non-finite loss or gradient, before the run fails:
# one such update can be a freak batch; several mean training has diverged.
MAX_NONFINITE_UPDATES = 3


class NonFiniteError(RuntimeError):
    """Training produced NaN or inf where it cannot continue; the message names the likely causes."""


_NONFINITE_CAUSES = ("likely causes: a learning rate too high for this env (--ppo-learning-rate), rewards of huge "
                     "magnitude (--ppo-reward-scale, --ppo-norm-reward), or observations of huge magnitude "
                     "(--ppo-norm-obs); resume from the latest checkpoint with a change")


def importance_weights(ratios: torch.Tensor) -> torch.Tensor:
    """pi_prox / mu per row (``ratios``, the same V-trace reads), truncated at 1 as V-trace's rho
    (IMPALA): the decoupled objective's correction for rollouts collected one update behind
    (``ppo_losses``' is_weights)."""
    return ratios.clamp(max=1.0)


class PPOLearner:
    def __init__(self, cfg: TrainConfig, env, policy_spec: dict | None = None, device: str = "cpu",
                 data_parallel=None):
        """``env``: the ``EnvInfo`` the runners report; ``policy_spec`` (default: the one ``cfg``
        asks for, ``agent.make_spec``) is built fresh from the run's seed. ``data_parallel`` (a
        ``training.distributed.DataParallel``): this learner is one of several, each given its share
        of every round's env columns (``learn``'s ``columns``); their updates are one update."""
        self.cfg = cfg
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        self.policy = build_agent(policy_spec or make_spec(cfg), env)
        self.policy.to(self.device)
        # torch's fused Adam kernel: one pass for all parameters, without torch.optim's import of
        # torch._dynamo (training/adam.py)
        self.optimizer = Adam(self.policy.parameters(), lr=cfg.ppo_learning_rate, eps=1e-5)
        self.update_index = 0
        self.total_updates = max(1, cfg.total_rounds)
        self.generator = np.random.default_rng(cfg.seed + 1)
        self.amp_dtype = resolve_precision(cfg.learner_precision, device)
        self.reward_scaler = RewardScaler(cfg.ppo_gamma) if cfg.ppo_norm_reward else None
        if self.policy.recurrent:
            check_env_columns(cfg)
        self.nonfinite_streak = 0
        self.data_parallel = data_parallel
        if data_parallel is not None:
            data_parallel.broadcast_parameters(self.policy)

    @property
    def policy_spec(self) -> dict:
        return self.policy.spec

    def weights(self) -> dict:
        return get_weights(self.policy)

    def kickstart_coef(self) -> float:
        """Kickstarting's distillation weight, decaying linearly to 0 over --kickstart-steps."""
        cfg = self.cfg
        if not cfg.kickstart_teacher:
            return 0.0
        done = self.update_index * cfg.steps_per_round
        return cfg.kickstart_coef * max(0.0, 1.0 - done / cfg.kickstart_steps)

    def learning_rate(self) -> float:
        return linear_lr(self.cfg.ppo_learning_rate, self.update_index, self.total_updates, anneal=self.cfg.ppo_anneal_lr)

    def learn(self, rollouts: list[dict], off_policy: bool = False, before_minibatch=None,
              columns: tuple[int, int] | None = None) -> dict:
        """One PPO update. ``off_policy``: the rollouts were collected with older weights (overlapped
        mode), so advantages are V-trace corrected with ratios of the current to the behaviour policy,
        and the policy loss is the decoupled one: clipped around the current policy, each row
        weighted by its (truncated) ratio.
        ``before_minibatch``: see ``ppo_update``. ``columns`` (data-parallel learners): this learner
        trains on envs [lo, hi) of the joined rollouts (counted in envs; a multi-agent env's rows
        come along), its equal share of the round."""
        cfg = self.cfg
        b = join_rollouts(rollouts)
        if columns is not None:
            rows_per_env = b["rewards"].shape[1] // (len(rollouts) * cfg.envs_per_worker)
            b = slice_columns(b, columns[0] * rows_per_env, columns[1] * rows_per_env)
        # warm-up rounds the teacher played: clone it (no policy-gradient term: these are not the
        # policy's actions) and fit the critic to its returns, on-policy for the teacher
        driven = b["driven"]
        off_policy = off_policy and not driven
        b["rewards"] = b["rewards"] * np.float32(cfg.ppo_reward_scale)
        if self.reward_scaler is not None:
            b["rewards"] = self.reward_scaler.scale(b["rewards"], b["terminals"] | b["truncations"], b["valid"])
        T, N = b["rewards"].shape

        def flat(x, dtype=None):
            with warnings.catch_warnings():
                # the update only reads these (minibatches are gathered copies), so sharing a
                # read-only object-store array is safe, and saves a copy of the batch (17 MB of
                # observations at 256 envs x 64 steps) at the learner's peak
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                t = torch.as_tensor(np.ascontiguousarray(x).reshape(T * N, *x.shape[2:]))
            return to_device(t, self.device, dtype)

        # observations keep the env's dtype: the policy casts each minibatch (training.encoders). A
        # byte layout (images, PufferLib's emulated Dict/Tuple) must reach it as bytes, and a float
        # copy of 4096 x 4 x 84 x 84 frames would be 460 MB
        obs, actions, behaviour_logprobs = flat(b["obs"]), flat(b["actions"]), flat(b["logprobs"])
        values = b["values"]
        in_pass = None
        column_groups = env_column_minibatches(T, N, cfg.ppo_num_minibatches, self.generator) if off_policy else None
        # overlapped mode: the decoupled objective's proximal log-probs (the policy the update starts
        # from) and importance weights pi_prox / mu replace the behaviour policy's in the loss
        old_logprobs, is_weights = behaviour_logprobs, None
        if column_groups is not None:
            # V-trace inside the update's first epoch (minibatches of whole env columns), from each
            # minibatch's own forward pass: no separate re-evaluation of the batch, which was ~12%
            # of an overlapped update. Those passes see the weights as the epoch has moved them so
            # far, i.e. the ratios and values of the policy being trained, as IMPALA's learner uses.
            in_pass = (column_groups, self._vtrace_targets(b, column_groups, behaviour_logprobs))
            adv, ret, values = (np.zeros((T, N), np.float32) for _ in range(3))  # written by ppo_update
            old_logprobs, is_weights = behaviour_logprobs.clone(), torch.zeros_like(behaviour_logprobs)
        elif off_policy:
            # in minibatch-sized chunks: one pass over the whole batch held every layer's activations
            # for all of it at once (+50-70 MiB at the learner's peak for 16k samples), and in the
            # update's precision (float32 re-evaluation took 15-25% of an overlapped bfloat16 update)
            chunk = max(1, (T * N) // cfg.ppo_num_minibatches)
            logprob, value = self._evaluate(obs, actions, chunk)
            ratios = torch.exp(logprob - behaviour_logprobs)
            adv, ret, values = self._vtrace_columns(b, slice(None), ratios, value)
            old_logprobs, is_weights = logprob, importance_weights(ratios)
        else:
            adv, ret = compute_gae(
                b["rewards"], values, b["terminals"], b["truncations"], b["valid"],
                b["bootstrap_values"], b["last_values"], cfg.ppo_gamma, cfg.ppo_gae_lambda,
            )
        batch = dict(
            obs=obs, actions=actions, logprobs=old_logprobs,
            values=flat(values), advantages=flat(adv), returns=flat(ret), valid=flat(b["valid"], torch.float32),
        )
        if is_weights is not None:
            batch["is_weights"] = is_weights
        sequences = None
        if self.policy.recurrent:
            sequences = (T, N)
            batch["state"] = {k: to_device(torch.as_tensor(v), self.device) for k, v in b["state"].items()}
            batch["resets"] = flat(sequence_resets(b["terminals"], b["truncations"], b["valid"]))
        if "teacher_played" in b:  # roll-ins: the teacher's steps train the critic and the distillation only
            batch["pg_valid"] = flat(b["valid"] & ~b["teacher_played"], torch.float32)
        prior = self.policy.prior_actions(obs)
        if prior is not None:
            batch["prior_actions"] = prior
        distill_coef = self.kickstart_coef()
        if distill_coef > 0 and "teacher_actions" in b:
            batch["teacher_actions"] = flat(b["teacher_actions"])
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.data_parallel is not None:
            self.data_parallel.local_cols = N
        metrics = ppo_update(
            self.policy, self.optimizer, batch,
            update_epochs=cfg.ppo_update_epochs, num_minibatches=cfg.ppo_num_minibatches,
            clip_coef=cfg.ppo_clip_coef, vf_clip_coef=cfg.ppo_vf_clip_coef, ent_coef=cfg.ppo_ent_coef,
            vf_coef=cfg.ppo_vf_coef, max_grad_norm=cfg.ppo_max_grad_norm, norm_adv=cfg.ppo_norm_adv,
            generator=self.generator, distill_coef=distill_coef, amp_dtype=self.amp_dtype,
            pg_coef=0.0 if driven else 1.0, before_minibatch=before_minibatch, in_pass_targets=in_pass,
            sequences=sequences, data_parallel=self.data_parallel,
        )
        self.update_index += 1
        self._check_finite(metrics)
        self._update_obs_norm(rollouts)
        metrics["learning_rate"] = lr
        if cfg.kickstart_warmup_steps:
            metrics["teacher_played"] = float(driven)  # a window's mean: the share of its rounds
        if "teacher_played" in b:
            metrics["rollin_share"] = float(b["teacher_played"].mean())  # of the round's steps
        return metrics

    def _check_finite(self, metrics: dict) -> None:
        """Fail after MAX_NONFINITE_UPDATES updates in a row that took no step (every minibatch was
        non-finite, ``ppo_update`` skipped it), and at once if the weights themselves are not finite
        (the run then stops before they reach a runner or a checkpoint)."""
        all_skipped = metrics.get("nonfinite_minibatches", 0) > 0 and metrics.get("num_minibatch_updates") == 0
        self.nonfinite_streak = self.nonfinite_streak + 1 if all_skipped else 0
        if self.nonfinite_streak >= MAX_NONFINITE_UPDATES:
            raise NonFiniteError(f"the last {self.nonfinite_streak} updates had a non-finite loss or gradient in every "
                                 f"minibatch, so training cannot go on; {_NONFINITE_CAUSES}")
        if not self.weights_finite():
            raise NonFiniteError(f"update {self.update_index} made the policy's weights non-finite; {_NONFINITE_CAUSES}")

    def weights_finite(self) -> bool:
        params = [p.detach().reshape(-1) for p in self.policy.parameters()]
        return bool(torch.isfinite(torch.cat(params)).all()) if params else True

    def _update_obs_norm(self, rollouts: list[dict]) -> None:
        """Merge every runner's observation moments into the normaliser, after the update: the
        update itself saw observations normalised as the runners saw them, so its first ratios
        are 1; the runners get the new statistics with the new weights."""
        if self.policy.obs_norm is None:
            return
        batch = Moments(0.0, 0.0, 0.0)
        for r in rollouts:
            batch = batch.merge(Moments.of(r["obs"], r["valid"]))
        self.policy.obs_norm.update(batch)

    def _vtrace_columns(self, b: dict, cols, ratios: torch.Tensor,
                        value: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """V-trace (advantages, returns, values), each (T, n), of the envs ``cols`` (an index array,
        or slice(None) for all) from their rows' ratios pi / mu (the current weights' log-probs
        against the behaviour policy's) and values under the current weights, flat and time-major."""
        T = b["rewards"].shape[0]
        ratios = ratios.cpu().numpy().reshape(T, -1)
        values = value.cpu().numpy().reshape(T, -1).astype(np.float32)
        adv, ret = compute_vtrace(
            b["rewards"][:, cols], values, b["terminals"][:, cols], b["truncations"][:, cols],
            b["valid"][:, cols], b["bootstrap_values"][:, cols], b["last_values"][cols], ratios,
            self.cfg.ppo_gamma, self.cfg.ppo_gae_lambda,
        )
        return adv, ret, values

    def _vtrace_targets(self, b: dict, groups: list[np.ndarray], behaviour_logprobs: torch.Tensor):
        """fn(k, logprob, value) for ``ppo_update``'s in_pass_targets: ``_vtrace_columns`` of the
        envs in groups[k] (a (T, n) block of whole env columns), flat, on the learner's device."""
        T = b["rewards"].shape[0]

        def targets(k: int, logprob: torch.Tensor, value: torch.Tensor) -> dict:
            idx = groups[k]
            cols = idx[: idx.size // T]  # row t = 0 of the block
            ratios = torch.exp(logprob - behaviour_logprobs[idx])
            out = self._vtrace_columns(b, cols, ratios, value)
            rows = {key: torch.from_numpy(x.reshape(-1)).to(self.device)
                    for key, x in zip(("advantages", "returns", "values"), out)}
            return dict(rows, logprobs=logprob, is_weights=importance_weights(ratios))

        return targets

    @torch.no_grad()
    def _evaluate(self, obs: torch.Tensor, actions: torch.Tensor, chunk: int):
        """Log-probs of ``actions`` and values under the current weights, ``chunk`` rows at a time."""
        logprobs, values = [], []
        for i in range(0, obs.shape[0], chunk):
            params, value = forward_float32(self.policy, obs[i:i + chunk], self.amp_dtype)
            logprobs.append(self.policy.logprob_entropy(params, actions[i:i + chunk])[0])
            values.append(value)
        return torch.cat(logprobs), torch.cat(values)

    # ---------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        """A snapshot (copies: the live tensors keep changing as training goes on). A policy with
        non-finite weights is never snapshotted: its checkpoint would be the run's latest."""
        if not self.weights_finite():
            raise NonFiniteError(f"the policy's weights are not finite; no checkpoint written; {_NONFINITE_CAUSES}")
        return dict(
            policy_spec=self.policy.spec,
            policy_state={k: v.detach().cpu().clone() for k, v in self.policy.state_dict().items()},
            optimizer_state=self.optimizer.state_dict(),  # already a copy
            update_index=self.update_index,
            total_updates=self.total_updates,
            numpy_rng=self.generator.bit_generator.state,
            torch_rng=torch.get_rng_state(),
            reward_scaler=self.reward_scaler.state_dict() if self.reward_scaler is not None else None,
        )

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_state_dict(state["policy_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.update_index = int(state["update_index"])
        self.generator.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if self.reward_scaler is not None and state.get("reward_scaler") is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])

"""The trainer's view of a policy: any PufferLib-convention module, plus an optional behaviour prior.

A run's policy is described by a JSON-serialisable spec, recorded in every checkpoint, so
``eval``, replays and ``--resume`` rebuild it without flags:

    {"version": 2, "factory": "pkg.module:factory", "kwargs": {...},
     "prior": "pkg.module:callable", "prior_logit": 7.0,     # prior: optional
     "obs_norm": true,                                       # optional: --ppo-norm-obs
     "lstm_size": 128}                                       # optional: --policy-lstm-size

``factory(env, **kwargs)`` builds the module (``training.policy`` says what it must offer; ``env``
is an ``EnvInfo``). A prior is a behaviour, a callable from a batch of observations (NumPy) to
actions, such as a scripted bot: its action gets ``prior_logit`` added to its logit, so the
untrained policy is a softened copy of the behaviour and PPO learns where to depart from it (a
residual policy). The same kind of callable serves as the kickstarting teacher. With ``obs_norm``
the agent normalises observations (``training.normalization.ObsNormalizer``) before the module
sees them; its statistics are buffers of the agent, so they go wherever the weights go. With
``lstm_size`` the factory is called with ``core_size=lstm_size`` (the width its ``decode_actions``
must read) and the module is wrapped by ``training.recurrent.LSTMWrapper``; a factory may also
return a recurrent module itself (one that declares ``initial_state``, ``training.recurrent``).

``Agent`` wraps the module for the runners, the learner and evaluation: it turns the module's
``logits`` into one form per action space (``training.distributions``), adds the prior, samples
and scores actions.
"""

from __future__ import annotations

import inspect

import gymnasium
import numpy as np
import torch
from torch import nn

from training.config import ConfigError
from training.distributions import ActionDist
from training.envs.env_info import EnvInfo
from training.envs.plugin import BUILTIN_POLICIES, behaviour_ref, policy_ref, resolve_ref
from training.normalization import ObsNormalizer
from training.recurrent import wrap_lstm

SPEC_VERSION = 2


def load_behaviour(ref: str, flag: str):
    behaviour = resolve_ref(ref, flag)
    if not callable(behaviour):
        raise TypeError(f"{flag} {ref!r} is not callable")
    return behaviour


def make_spec(cfg) -> dict:
    """The policy spec a run's settings ask for. ``--policy-hidden`` fills the factory's ``hidden``
    argument when it has one and ``--policy-kwargs`` does not set it."""
    factory_ref = policy_ref(cfg.policy, cfg.env)
    kwargs = dict(cfg.policy_kwargs or {})
    if "hidden" not in kwargs and "hidden" in inspect.signature(resolve_ref(factory_ref, "--policy")).parameters:
        kwargs["hidden"] = list(cfg.hidden_sizes)
    spec = {"version": SPEC_VERSION, "factory": factory_ref, "kwargs": kwargs}
    if cfg.policy_prior:
        spec.update(prior=behaviour_ref(cfg.policy_prior, cfg.env, "--policy-prior"),
                    prior_logit=float(cfg.policy_prior_logit))
    if getattr(cfg, "ppo_norm_obs", False):
        spec["obs_norm"] = True
    if getattr(cfg, "policy_lstm_size", 0):
        spec["lstm_size"] = int(cfg.policy_lstm_size)
    return spec


def build_agent(spec: dict, env) -> "Agent":
    """The agent ``spec`` describes, freshly initialised, for ``env`` (an ``EnvInfo``)."""
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"unsupported policy spec version {spec.get('version')!r} (this trainer reads {SPEC_VERSION})")
    factory = resolve_ref(spec["factory"], "--policy")
    kwargs = dict(spec.get("kwargs", {}))
    lstm_size = spec.get("lstm_size")
    if lstm_size:
        if "core_size" not in inspect.signature(factory).parameters:
            raise ConfigError("--policy-lstm-size", f"the policy factory {spec['factory']!r} takes no core_size "
                              "argument (the width its decode_actions reads), so it cannot sit behind an LSTM; "
                              "add one, or return a recurrent module (docs/EXTENDING.md, \"Recurrent policies\")")
        kwargs["core_size"] = int(lstm_size)
    module = factory(env, **kwargs)
    if lstm_size:
        module = wrap_lstm(module, env, int(lstm_size))
    if not isinstance(module, nn.Module) or not callable(getattr(module, "forward_eval", None)):
        raise TypeError(f"--policy {spec['factory']!r} built a {type(module).__name__}; it must return a torch "
                        "module with forward_eval(observations, state) -> (logits, values) and forward(...)")
    prior = load_behaviour(spec["prior"], "--policy-prior") if spec.get("prior") else None
    obs_norm = None
    if spec.get("obs_norm"):
        space = env.single_observation_space  # what the normaliser sees: the observations as they travel
        if not (isinstance(space, gymnasium.spaces.Box) and np.issubdtype(space.dtype, np.floating)):
            native = getattr(env, "native_observation_space", None)
            shown = space if native is None or native is space else f"{native} (travelling as {space})"
            raise TypeError(f"--ppo-norm-obs needs a Box observation space of floats, not {shown}")
        obs_norm = ObsNormalizer(space.shape)
    return Agent(module, env.single_action_space, spec, prior, spec.get("prior_logit", 0.0), obs_norm)


def mlp_agent(observation_space, action_space, hidden=(256, 256)) -> "Agent":
    """The MLP policy (``--policy mlp``) for these spaces, freshly initialised: what ``--policy
    default`` builds for any observation but an image."""
    spec = {"version": SPEC_VERSION, "factory": BUILTIN_POLICIES["mlp"], "kwargs": {"hidden": list(hidden)}}
    return build_agent(spec, EnvInfo(observation_space, action_space))


class Agent(nn.Module):
    """``policy``: the plug-in module (its parameters are this module's, under ``policy.``).
    ``obs_norm``: an ``ObsNormalizer`` the module's inputs pass through (its buffers are this
    module's, under ``obs_norm.``); the prior and the teacher see raw observations."""

    def __init__(self, policy: nn.Module, action_space, spec: dict, prior=None, prior_logit: float = 0.0,
                 obs_norm: ObsNormalizer | None = None):
        super().__init__()
        self.policy = policy
        self.obs_norm = obs_norm
        self.spec = spec
        self.action_space = action_space
        self.dist = ActionDist(action_space)
        if prior is not None and self.dist.kind != "discrete":
            raise TypeError(f"--policy-prior needs a Discrete action space, not {action_space}")
        self.prior, self.prior_logit = prior, float(prior_logit)

    def prior_actions(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The prior's actions for ``obs``, or None without a prior. The learner computes them once
        per batch rather than once per minibatch and epoch."""
        if self.prior is None:
            return None
        actions = self.prior(obs.detach().float().cpu().numpy())
        return torch.from_numpy(np.asarray(actions)).to(obs.device)

    def _finish(self, logits, obs: torch.Tensor, prior: torch.Tensor | None):
        params = self.dist.params(logits)
        if self.prior is not None:
            params = self.dist.with_bonus(params, self.prior_actions(obs) if prior is None else prior, self.prior_logit)
        return params

    def _inputs(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.obs_norm is None else self.obs_norm(obs)

    @property
    def recurrent(self) -> bool:
        """True when the policy carries a state from step to step (``training.recurrent``)."""
        return callable(getattr(self.policy, "initial_state", None))

    def initial_state(self, batch_size: int, device=None) -> dict[str, torch.Tensor] | None:
        return self.policy.initial_state(batch_size, device) if self.recurrent else None

    def forward(self, obs: torch.Tensor, prior: torch.Tensor | None = None, state: dict | None = None):
        """The training forward pass: (distribution parameters, values (B,)). ``prior``: the prior's
        actions for these rows, if already computed (``prior_actions``). A recurrent policy needs
        ``state``: the rows are n whole env columns of T steps, time-major (row t * n + j), and
        ``state`` holds each column's starting state (n, ...) and ``resets`` (T, n)."""
        if state is None:
            logits, values = self.policy(self._inputs(obs), None)
            return self._finish(logits, obs, prior), values.reshape(-1)
        T, n = state["resets"].shape
        # the policy's convention is batch-major (B, TT, ...); the learner's rows are time-major
        inputs = self._inputs(obs).reshape(T, n, *obs.shape[1:]).transpose(0, 1)
        logits, values = self.policy(inputs, {**state, "resets": state["resets"].T})
        return self._finish(_time_major(logits, n, T), obs, prior), values.reshape(n, T).T.reshape(-1)

    def forward_eval(self, obs: torch.Tensor, state: dict | None = None):
        """One step; a recurrent policy reads ``state`` and writes the next one into it."""
        logits, values = self.policy.forward_eval(self._inputs(obs), state)
        return self._finish(logits, obs, None), values.reshape(-1)

    def values(self, obs: torch.Tensor, state: dict | None = None) -> torch.Tensor:
        """Values of ``obs``; a recurrent policy's ``state`` is read, not advanced."""
        return self.policy.forward_eval(self._inputs(obs), None if state is None else dict(state))[1].reshape(-1)

    def logprob_entropy(self, params, action: torch.Tensor):
        return self.dist.logprob_entropy(params, action)

    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None, with_value: bool = True,
            temperature: float = 1.0, state: dict | None = None):
        """-> (action, logprob (B,), value (B,)); actions as ``ActionDist.sample`` gives them.
        ``with_value=False``: values are zeros, and a policy with ``forward_actor`` skips its critic.
        ``temperature`` != 1 samples from ``ActionDist.tempered`` (evaluation only: the logprob is
        then the tempered distribution's, not the policy's). A recurrent policy advances ``state``
        (and always runs its critic: the state passes through the shared core)."""
        if with_value or state is not None:
            params, value = self.forward_eval(obs, state)
        else:
            actor = getattr(self.policy, "forward_actor", None)
            inputs = self._inputs(obs)
            logits = actor(inputs, None) if actor is not None else self.policy.forward_eval(inputs, None)[0]
            params, value = self._finish(logits, obs, None), torch.zeros(obs.shape[0], device=obs.device)
        if temperature != 1.0:
            params = self.dist.tempered(params, temperature)
        action = self.dist.sample(params, deterministic, generator)
        logprob, _ = self.dist.logprob_entropy(params, action)
        return action, logprob, value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor):
        """-> (logprob (B,), entropy (B,), value (B,)) of given actions under the current policy."""
        params, value = self.forward(obs)
        logprob, entropy = self.dist.logprob_entropy(params, action)
        return logprob, entropy, value


def _time_major(logits, n: int, T: int):
    """Rows j * T + t (batch-major) -> t * n + j; ``logits`` may be a tuple (a Gaussian's)."""
    if isinstance(logits, tuple):
        return tuple(_time_major(x, n, T) for x in logits)
    return logits.reshape(n, T, *logits.shape[1:]).transpose(0, 1).reshape(n * T, *logits.shape[1:])


def get_weights(agent: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in agent.state_dict().items()}


def set_weights(agent: nn.Module, weights: dict[str, np.ndarray]) -> None:
    # np.array copies: arrays from Ray's object store are read-only and torch warns on them.
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()}
    agent.load_state_dict(state, strict=True)

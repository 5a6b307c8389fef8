"""Actor-critic MLP policy for flat Box observations and Discrete / MultiDiscrete / Box actions.

The architecture is fully described by a JSON-serialisable ``spec`` dict so that a
checkpoint (spec + numpy weights) can be rebuilt without the original CLI flags or
environment. Following CleanRL, the actor and critic are separate MLPs with
orthogonal init (sqrt(2) hidden, 0.01 policy head, 1.0 value head): the tiny policy
head starts the policy near uniform, which matters more than any other init detail.

Distribution parameters returned by ``Policy.forward``:
  * discrete:       logits, (B, n)
  * multidiscrete:  concatenated logits, (B, sum(nvec))
  * box:            tuple (mean, log_std), each (B, d); log_std is state-independent

Sampling goes through explicit uniform/normal noise rather than torch.distributions so
that env runners can pass their own ``torch.Generator`` or ``np.random.Generator`` and
get reproducible actions independent of the global torch RNG.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import torch
from torch import nn

from training.fast_tanh import Tanh

SPEC_VERSION = 1


_ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU}
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _finite_or_none(values: np.ndarray) -> list:
    # JSON has no infinity; unbounded Box limits are stored as None.
    return [float(v) if np.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).ravel()]


def _action_spec(act_space) -> dict:
    if isinstance(act_space, gymnasium.spaces.Discrete):
        if int(act_space.start) != 0:
            raise ValueError(f"Discrete action spaces with start != 0 are not supported: {act_space}")
        return {"kind": "discrete", "n": int(act_space.n)}
    if isinstance(act_space, gymnasium.spaces.MultiDiscrete):
        if np.any(np.asarray(act_space.start) != 0):
            raise ValueError(f"MultiDiscrete action spaces with start != 0 are not supported: {act_space}")
        return {
            "kind": "multidiscrete",
            "nvec": [int(n) for n in np.asarray(act_space.nvec).ravel()],
            "shape": [int(s) for s in np.asarray(act_space.nvec).shape],
        }
    if isinstance(act_space, gymnasium.spaces.Box):
        return {
            "kind": "box",
            "shape": [int(s) for s in act_space.shape],
            "low": _finite_or_none(act_space.low),
            "high": _finite_or_none(act_space.high),
        }
    raise TypeError(f"unsupported action space {act_space!r}: expected Discrete, MultiDiscrete or Box")


def make_spec(obs_space, act_space, hidden=(256, 256), activation: str = "tanh", encoder: dict | None = None) -> dict:
    """The architecture spec build_policy would use, without building the network.
    ``encoder`` (optional) replaces the actor MLP with an env-specific actor, e.g.
    ``training.prospector_net.encoder_spec(rules)``; the critic stays an MLP."""
    if not isinstance(obs_space, gymnasium.spaces.Box):
        raise TypeError(f"unsupported observation space {obs_space!r}: expected Box")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    spec = {
        "version": SPEC_VERSION,
        "obs_shape": [int(s) for s in obs_space.shape],
        "action": _action_spec(act_space),
        "hidden": [int(h) for h in hidden],
        "activation": activation,
    }
    if encoder is not None:
        spec["encoder"] = encoder
        _encoder_module(spec)  # checks the spaces now, not when a runner builds the policy
    return spec


def orthogonal_linear(in_dim: int, out_dim: int, std: float, bias: bool = True) -> nn.Linear:
    """A linear layer with CleanRL's init: orthogonal weights of gain ``std``, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.orthogonal_(layer.weight, std)
    if bias:
        nn.init.constant_(layer.bias, 0.0)
    return layer


def _mlp(in_dim: int, hidden: list[int], out_dim: int, head_std: float, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [orthogonal_linear(in_dim, h, math.sqrt(2.0)), _ACTIVATIONS[activation]()]
        in_dim = h
    layers.append(orthogonal_linear(in_dim, out_dim, head_std))
    return nn.Sequential(*layers)


def _encoder_module(spec: dict):
    """The module defining the spec's env-specific actor, after checking it fits the spec's spaces."""
    kind = spec["encoder"].get("kind")
    if kind != "prospector":
        raise ValueError(f"unknown policy encoder {kind!r}")
    from training import prospector_net  # only prospector policies need it

    prospector_net.check_spaces(spec["obs_shape"], spec["action"])
    return prospector_net


def _build_actor(spec: dict, out_dim: int) -> nn.Module:
    obs_dim = int(np.prod(spec["obs_shape"], dtype=np.int64))
    mlp = lambda: _mlp(obs_dim, list(spec["hidden"]), out_dim, 0.01, spec["activation"])  # noqa: E731
    encoder = spec.get("encoder")
    if encoder is None:
        return mlp()
    module = _encoder_module(spec)
    if not encoder.get("slots", True):  # specs written before "slots" existed are slot actors
        return module.MaskedMLPActor(encoder, mlp())
    return module.ProspectorActor(encoder, list(spec["hidden"]), _ACTIVATIONS[spec["activation"]])


def _uniform(shape, generator, device) -> torch.Tensor:
    if isinstance(generator, np.random.Generator):
        noise = torch.from_numpy(generator.random(shape, dtype=np.float32))
    else:
        noise = torch.rand(shape, generator=generator)
    return noise.to(device)


def _normal(shape, generator, device) -> torch.Tensor:
    if isinstance(generator, np.random.Generator):
        noise = torch.from_numpy(generator.standard_normal(shape, dtype=np.float32))
    else:
        noise = torch.randn(shape, generator=generator)
    return noise.to(device)


def _sample_categorical(logits: torch.Tensor, generator) -> torch.Tensor:
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact categorical sample.
    u = _uniform(tuple(logits.shape), generator, logits.device).clamp_(1e-20, 1.0 - 1e-7)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)


def _categorical_logprob_entropy(logits: torch.Tensor, action: torch.Tensor):
    log_p = torch.log_softmax(logits, dim=-1)
    logprob = log_p.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return logprob, entropy


class Policy(nn.Module):
    """Separate actor and critic MLPs over flattened float32 observations."""

    def __init__(self, spec: dict):
        super().__init__()
        if spec.get("version") != SPEC_VERSION:
            raise ValueError(f"unsupported policy spec version {spec.get('version')!r}")
        self.spec = spec
        self.obs_shape = tuple(spec["obs_shape"])
        obs_dim = int(np.prod(self.obs_shape, dtype=np.int64))
        act = spec["action"]
        self.kind = act["kind"]
        hidden, activation = list(spec["hidden"]), spec["activation"]
        if self.kind == "discrete":
            out_dim = act["n"]
        elif self.kind == "multidiscrete":
            self.nvec = list(act["nvec"])
            out_dim = sum(self.nvec)
        elif self.kind == "box":
            self.act_dim = int(np.prod(act["shape"], dtype=np.int64))
            out_dim = self.act_dim
            # State-independent log-std (CleanRL continuous PPO); starts at std = 1.
            self.actor_logstd = nn.Parameter(torch.zeros(1, self.act_dim))
        else:
            raise ValueError(f"unknown action kind {self.kind!r}")
        self.actor = _build_actor(spec, out_dim)
        self.critic = _mlp(obs_dim, hidden, 1, 1.0, activation)

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.reshape(obs.shape[0], -1).to(torch.float32)

    def _dist_params(self, x: torch.Tensor, prior: torch.Tensor | None = None):
        out = self.actor(x) if prior is None else self.actor(x, prior)
        return (out, self.actor_logstd.expand_as(out)) if self.kind == "box" else out

    def forward(self, obs: torch.Tensor, prior: torch.Tensor | None = None):
        """obs (B, *obs_shape) of any dtype -> (dist_params, value (B,)). ``prior``: the actions of a
        residual actor's prior bot for these rows, if computed already (``prior_actions``)."""
        x = self._flat(obs)
        return self._dist_params(x, prior), self.critic(x).squeeze(-1)

    def prior_actions(self, obs: torch.Tensor) -> torch.Tensor | None:
        """The prior bot's actions for ``obs`` (a residual prospector actor), else None. The learner
        computes them once per batch rather than once per minibatch and epoch."""
        encoder = self.spec.get("encoder")
        if not encoder or not encoder.get("prior"):
            return None
        from training.prospector_net import prior_actions

        return prior_actions(self._flat(obs), encoder)

    def logprob_entropy(self, params, action: torch.Tensor):
        if self.kind == "discrete":
            return _categorical_logprob_entropy(params, action)
        if self.kind == "multidiscrete":
            action = action.reshape(action.shape[0], -1)
            pairs = [
                _categorical_logprob_entropy(logits, action[:, i])
                for i, logits in enumerate(torch.split(params, self.nvec, dim=-1))
            ]
            return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        mean, log_std = params
        action = action.reshape(mean.shape).to(mean.dtype)
        z = (action - mean) * torch.exp(-log_std)
        logprob = (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum(-1)
        return logprob, entropy

    def _sample(self, params, deterministic: bool, generator) -> torch.Tensor:
        if self.kind == "discrete":
            return params.argmax(-1) if deterministic else _sample_categorical(params, generator)
        if self.kind == "multidiscrete":
            parts = [
                logits.argmax(-1) if deterministic else _sample_categorical(logits, generator)
                for logits in torch.split(params, self.nvec, dim=-1)
            ]
            return torch.stack(parts, dim=-1)
        mean, log_std = params
        if deterministic:
            return mean
        return mean + torch.exp(log_std) * _normal(tuple(mean.shape), generator, mean.device)

    def tempered(self, params, temperature: float):
        """The action distribution at ``temperature``: logits / T (categorical), std x T (Gaussian).
        T < 1 sharpens it toward the argmax / mean, T = 1 is the policy itself."""
        if self.kind == "box":
            mean, log_std = params
            return mean, log_std + math.log(temperature)
        return params / temperature

    def act(self, obs: torch.Tensor, deterministic: bool = False, generator=None, with_value: bool = True,
            temperature: float = 1.0):
        """-> (action, logprob (B,), value (B,)). Discrete: int64 (B,); MultiDiscrete: int64 (B, k);
        Box: float32 (B, d), unsquashed (the env wrapper clips). ``generator`` may be a
        torch.Generator (CPU), an np.random.Generator, or None for the global torch RNG.
        ``with_value=False`` skips the critic (half the work) and returns zeros as values.
        ``temperature`` != 1 samples from ``tempered`` (evaluation only: the logprob is then the
        tempered distribution's, not the policy's)."""
        if with_value:
            params, value = self.forward(obs)
        else:
            params, value = self._dist_params(self._flat(obs)), torch.zeros(obs.shape[0], device=obs.device)
        if temperature != 1.0:
            params = self.tempered(params, temperature)
        action = self._sample(params, deterministic, generator)
        logprob, _ = self.logprob_entropy(params, action)
        return action, logprob, value

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor):
        """-> (logprob (B,), entropy (B,), value (B,)) of given actions under the current policy."""
        params, value = self.forward(obs)
        logprob, entropy = self.logprob_entropy(params, action)
        return logprob, entropy, value


def build_policy(obs_space, act_space, hidden=(256, 256), activation: str = "tanh", encoder: dict | None = None) -> Policy:
    return Policy(make_spec(obs_space, act_space, hidden, activation, encoder))


def policy_from_spec(spec: dict) -> Policy:
    return Policy(spec)


def policy_numpy_act(policy: Policy, obs_np: np.ndarray, deterministic: bool = False, generator=None):
    """Numpy in, numpy out, no autograd. Accepts a batch (B, *obs_shape) or one unbatched obs."""
    obs_np = np.asarray(obs_np)
    if not obs_np.flags.writeable:  # torch warns on read-only buffers (shared memory, Ray)
        obs_np = obs_np.copy()
    unbatched = obs_np.shape == policy.obs_shape
    obs = torch.from_numpy(obs_np[None] if unbatched else obs_np)
    device = next(policy.parameters()).device
    with torch.no_grad():
        action, logprob, value = policy.act(obs.to(device), deterministic, generator)
    out = tuple(t.cpu().numpy() for t in (action, logprob, value))
    return tuple(a[0] for a in out) if unbatched else out


def get_weights(policy: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in policy.state_dict().items()}


def set_weights(policy: nn.Module, weights: dict[str, np.ndarray]) -> None:
    # np.array copies: arrays from Ray's object store are read-only and torch warns on them.
    state = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()}
    policy.load_state_dict(state, strict=True)

"""Action distributions from what a PufferLib-style policy returns as ``logits``.

A policy's ``forward_eval(observations, state) -> (logits, values)`` returns, per action space:
  * Discrete(n):         a tensor (B, n)
  * MultiDiscrete(nvec): a tensor (B, sum(nvec)), or a list of tensors (B, nvec[i]) as PufferLib's own
  * Box(d):              a ``torch.distributions.Normal`` (PufferLib's), or a pair (mean, log_std), each (B, d)

``ActionDist`` turns these into one form per kind (a tensor, a tensor, a (mean, log_std) pair)
and samples, scores and tempers them. Sampling goes through explicit uniform/normal noise rather
than torch.distributions, so env runners can pass their own ``torch.Generator`` or
``np.random.Generator`` and get reproducible actions independent of the global torch RNG.
"""

from __future__ import annotations

import math

import gymnasium
import numpy as np
import torch

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _noise(shape, generator, device, normal: bool) -> torch.Tensor:
    """Uniform [0, 1) or standard normal float32 noise from a torch or NumPy generator."""
    if isinstance(generator, np.random.Generator):
        draw = generator.standard_normal if normal else generator.random
        noise = torch.from_numpy(draw(shape, dtype=np.float32))
    else:
        # drawn where the generator lives: a runner acting on CUDA keeps its generator there, so the
        # noise needs no host-to-device copy of its own
        where = generator.device if isinstance(generator, torch.Generator) else "cpu"
        noise = (torch.randn if normal else torch.rand)(shape, generator=generator, device=where)
    return noise.to(device)


def _sample_categorical(logits: torch.Tensor, generator) -> torch.Tensor:
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact categorical sample.
    u = _noise(tuple(logits.shape), generator, logits.device, normal=False).clamp_(1e-20, 1.0 - 1e-7)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1)


def _categorical_logprob_entropy(logits: torch.Tensor, action: torch.Tensor):
    log_p = torch.log_softmax(logits, dim=-1)
    logprob = log_p.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return logprob, entropy


class ActionDist:
    """The distribution family of one action space: ``kind`` is discrete, multidiscrete or box."""

    def __init__(self, space):
        if isinstance(space, gymnasium.spaces.Discrete):
            if int(space.start) != 0:
                raise ValueError(f"Discrete action spaces with start != 0 are not supported: {space}")
            self.kind, self.n = "discrete", int(space.n)
        elif isinstance(space, gymnasium.spaces.MultiDiscrete):
            if np.any(np.asarray(space.start) != 0):
                raise ValueError(f"MultiDiscrete action spaces with start != 0 are not supported: {space}")
            self.kind, self.nvec = "multidiscrete", [int(n) for n in np.asarray(space.nvec).ravel()]
        elif isinstance(space, gymnasium.spaces.Box):
            self.kind, self.shape = "box", tuple(int(s) for s in space.shape)
        else:
            raise TypeError(f"unsupported action space {space!r}: expected Discrete, MultiDiscrete or Box")

    def params(self, logits):
        """The policy's ``logits`` in this family's one form (see the module docstring)."""
        if self.kind == "box":
            if isinstance(logits, torch.distributions.Normal):
                return logits.loc, logits.scale.log()
            mean, log_std = logits
            return mean, log_std.expand_as(mean)
        if self.kind == "multidiscrete" and isinstance(logits, (list, tuple)):
            return torch.cat(list(logits), dim=-1)
        return logits

    def float32(self, params):
        """The parameters in float32 (the outputs of a forward pass under autocast)."""
        return tuple(p.float() for p in params) if self.kind == "box" else params.float()

    def logprob_entropy(self, params, action: torch.Tensor):
        if self.kind == "discrete":
            return _categorical_logprob_entropy(params, action)
        if self.kind == "multidiscrete":
            action = action.reshape(action.shape[0], -1)
            pairs = [_categorical_logprob_entropy(logits, action[:, i])
                     for i, logits in enumerate(torch.split(params, self.nvec, dim=-1))]
            return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        mean, log_std = params
        action = action.reshape(mean.shape).to(mean.dtype)
        z = (action - mean) * torch.exp(-log_std)
        logprob = (-0.5 * z.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
        entropy = (0.5 + _LOG_SQRT_2PI + log_std).sum(-1)
        return logprob, entropy

    def sample(self, params, deterministic: bool, generator) -> torch.Tensor:
        """Discrete: int64 (B,); MultiDiscrete: int64 (B, k); Box: float32 (B, d), unsquashed (the
        caller clips to the bounds). ``generator``: a CPU torch.Generator, an np.random.Generator,
        or None for the global torch RNG."""
        if self.kind == "discrete":
            return params.argmax(-1) if deterministic else _sample_categorical(params, generator)
        if self.kind == "multidiscrete":
            parts = [logits.argmax(-1) if deterministic else _sample_categorical(logits, generator)
                     for logits in torch.split(params, self.nvec, dim=-1)]
            return torch.stack(parts, dim=-1)
        mean, log_std = params
        if deterministic:
            return mean
        return mean + torch.exp(log_std) * _noise(tuple(mean.shape), generator, mean.device, normal=True)

    def tempered(self, params, temperature: float):
        """The distribution at ``temperature``: logits / T (categorical), std x T (Gaussian). T < 1
        sharpens it toward the argmax / mean, T = 1 is the policy itself."""
        if self.kind == "box":
            mean, log_std = params
            return mean, log_std + math.log(temperature)
        return params / temperature

    def with_bonus(self, params, actions: torch.Tensor, bonus: float):
        """Discrete logits with ``bonus`` added to each row's entry ``actions[row]`` (a residual
        policy's prior). A masked logit stays masked: -1e9 + a few rounds back to -1e9 in float32."""
        if self.kind != "discrete":
            raise TypeError(f"a behaviour prior needs a Discrete action space, not {self.kind}")
        params = params.float()
        return params + torch.zeros_like(params).scatter_(1, actions[:, None].long(), float(bonus))

"""The default policy (``--policy mlp``) and the layers policies are built from.

Policies follow PufferLib's convention (``pufferlib.models``): ``Policy(env, **kwargs)`` builds a
torch module from the env's ``single_observation_space`` and ``single_action_space``;
``forward_eval(observations, state) -> (logits, values)`` acts, ``forward`` trains (the same
thing for a feed-forward policy), and ``encode_observations`` / ``decode_actions`` split the two
halves so a recurrent wrapper can sit between them. ``training.distributions`` lists the
``logits`` forms per action space. A policy may also define ``forward_actor(observations, state)
-> logits``: runners that need no values (overlapped mode) then skip the critic.

``MLPPolicy`` follows CleanRL: separate actor and critic MLPs with orthogonal init (sqrt(2) hidden,
0.01 policy head, 1.0 value head): the tiny policy head starts the policy near uniform, which
matters more than any other init detail; a state-independent log-std for Box actions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training.distributions import ActionDist
from training.fast_tanh import Tanh

ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU}


def orthogonal_linear(in_dim: int, out_dim: int, std: float, bias: bool = True) -> nn.Linear:
    """A linear layer with CleanRL's init: orthogonal weights of gain ``std``, zero bias."""
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.orthogonal_(layer.weight, std)
    if bias:
        nn.init.constant_(layer.bias, 0.0)
    return layer


def mlp(in_dim: int, hidden, out_dim: int, head_std: float, activation: str = "tanh") -> nn.Sequential:
    """Hidden layers of orthogonal gain sqrt(2) with ``activation``, then a linear head of gain ``head_std``."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [orthogonal_linear(in_dim, int(h), math.sqrt(2.0)), ACTIVATIONS[activation]()]
        in_dim = int(h)
    layers.append(orthogonal_linear(in_dim, out_dim, head_std))
    return nn.Sequential(*layers)


def flat_size(space) -> int:
    """Floats in one flattened observation of a Box space."""
    if not hasattr(space, "shape") or space.shape is None or not len(space.shape):
        raise TypeError(f"unsupported observation space {space!r}: expected a Box")
    return int(np.prod(space.shape, dtype=np.int64))


class ActorCritic(nn.Module):
    """Separate ``actor`` and ``critic`` modules, set by a subclass, over the flattened observation
    as float32. A subclass may shape the actor's output in ``logits`` (the game masks it)."""

    is_continuous = False  # True: the actor's output is a Gaussian's mean, beside ``actor_logstd``

    def encode_observations(self, observations: torch.Tensor, state=None) -> torch.Tensor:
        return observations.reshape(observations.shape[0], -1).float()

    def logits(self, hidden: torch.Tensor):
        out = self.actor(hidden)
        return (out, self.actor_logstd.expand_as(out)) if self.is_continuous else out

    def decode_actions(self, hidden: torch.Tensor):
        return self.logits(hidden), self.critic(hidden)

    def forward_eval(self, observations: torch.Tensor, state=None):
        return self.decode_actions(self.encode_observations(observations, state))

    def forward(self, observations: torch.Tensor, state=None):
        return self.forward_eval(observations, state)

    def forward_actor(self, observations: torch.Tensor, state=None):
        return self.logits(self.encode_observations(observations, state))


class MLPPolicy(ActorCritic):
    """Actor and critic MLPs of ``hidden`` units. Box actions: a Gaussian whose mean the actor
    gives and whose log standard deviation is one learned parameter per action dimension, starting
    at ``log_std_init`` (0: std 1, CleanRL's start, wide enough to explore bounds of +-1).
    ``core_size``: the width of the features the MLPs read, when a recurrent core sits between the
    observation and them (``--policy-lstm-size``); None: the flattened observation."""

    def __init__(self, env, hidden=(256, 256), activation: str = "tanh", log_std_init: float = 0.0,
                 core_size: int | None = None):
        super().__init__()
        obs_dim = int(core_size) if core_size else flat_size(env.single_observation_space)
        dist = ActionDist(env.single_action_space)
        self.is_continuous = dist.kind == "box"
        if dist.kind == "discrete":
            out_dim = dist.n
        elif dist.kind == "multidiscrete":
            out_dim = sum(dist.nvec)
        else:
            out_dim = int(np.prod(dist.shape))
            self.actor_logstd = nn.Parameter(torch.full((1, out_dim), float(log_std_init)))
        self.actor = mlp(obs_dim, hidden, out_dim, 0.01, activation)
        self.critic = mlp(obs_dim, hidden, 1, 1.0, activation)

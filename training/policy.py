"""The built-in policies (``--policy default | mlp | cnn``) and the layers policies are built from.

Policies follow PufferLib's convention (``pufferlib.models``): ``Policy(env, **kwargs)`` builds a
torch module from the env's ``single_observation_space`` and ``single_action_space``;
``forward_eval(observations, state) -> (logits, values)`` acts, ``forward`` trains (the same
thing for a feed-forward policy), and ``encode_observations`` / ``decode_actions`` split the two
halves so a recurrent wrapper can sit between them. ``training.distributions`` lists the
``logits`` forms per action space. A policy may also define ``forward_actor(observations, state)
-> logits``: runners that need no values (overlapped mode) then skip the critic.

Observations reach a policy as they travel, in the env's dtype (bytes for images and for
PufferLib's emulated Dict/Tuple/Discrete layout); ``encode_observations`` turns them into floats
with an encoder from ``training.encoders``, one minibatch at a time.

``MLPPolicy`` follows CleanRL: separate actor and critic MLPs with orthogonal init (sqrt(2) hidden,
0.01 policy head, 1.0 value head): the tiny policy head starts the policy near uniform, which
matters more than any other init detail; a state-independent log-std for Box actions. Its input is
the flattened observation, or for a structured one each part encoded (``training.encoders``).
``CNNPolicy`` is the Nature CNN (``pufferlib.models.Convolutional``) with a linear actor and critic
on its features. ``default_policy`` (``--policy default``) picks the CNN for images and the MLP
for everything else.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from training.distributions import ActionDist
from training.encoders import NATURE_MIN_SIDE, NatureCNN, image_layout, native_space, observation_encoder
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


def action_head_size(action_space) -> tuple[int, bool]:
    """(outputs of the actor's head, whether it is a Gaussian's mean) for ``action_space``."""
    dist = ActionDist(action_space)
    if dist.kind == "discrete":
        return dist.n, False
    if dist.kind == "multidiscrete":
        return sum(dist.nvec), False
    return int(np.prod(dist.shape)), True


class ActorCritic(nn.Module):
    """Separate ``actor`` and ``critic`` modules, set by a subclass, over the observation's
    features: those of the subclass's ``encoder`` (``training.encoders``) if it has one, else the
    flattened observation as float32. A subclass may shape the actor's output in ``logits`` (the
    game masks it)."""

    is_continuous = False  # True: the actor's output is a Gaussian's mean, beside ``actor_logstd``

    def encode_observations(self, observations: torch.Tensor, state=None) -> torch.Tensor:
        encoder = getattr(self, "encoder", None)
        if encoder is not None:
            return encoder(observations)
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
    observation and them (``--policy-lstm-size``); None: the encoded observation (a Box's
    values; a Dict's, Tuple's or Discrete's parts one-hot or flattened, ``training.encoders``).
    The encoder has no parameters, so a Box observation's state_dict holds ``actor.*``,
    ``critic.*`` and, for Box actions, ``actor_logstd``, as it always has."""

    def __init__(self, env, hidden=(256, 256), activation: str = "tanh", log_std_init: float = 0.0,
                 core_size: int | None = None):
        super().__init__()
        self.encoder = observation_encoder(env)
        obs_dim = int(core_size) if core_size else self.encoder.out_dim
        out_dim, self.is_continuous = action_head_size(env.single_action_space)
        if self.is_continuous:
            self.actor_logstd = nn.Parameter(torch.full((1, out_dim), float(log_std_init)))
        self.actor = mlp(obs_dim, hidden, out_dim, 0.01, activation)
        self.critic = mlp(obs_dim, hidden, 1, 1.0, activation)


class CNNPolicy(ActorCritic):
    """The Nature CNN (``training.encoders.NatureCNN``: ``pufferlib.models.Convolutional``'s
    network) over image observations, then a linear actor head (gain 0.01) and a linear value head
    (gain 1). ``hidden``: the linear layers after the convolutions (512 in the Nature paper).
    ``core_size``: the width the heads read when an LSTM sits between the CNN and them
    (``--policy-lstm-size``). ``channels_last``: the image layout, None to read it from the space
    (``training.encoders.image_layout``). Box actions: a learned state-independent log-std, from
    ``log_std_init``."""

    def __init__(self, env, hidden=(512,), core_size: int | None = None, log_std_init: float = 0.0,
                 channels_last: bool | None = None):
        super().__init__()
        self.encoder = NatureCNN(native_space(env), hidden, channels_last)
        width = int(core_size) if core_size else self.encoder.out_dim
        out_dim, self.is_continuous = action_head_size(env.single_action_space)
        if self.is_continuous:
            self.actor_logstd = nn.Parameter(torch.full((1, out_dim), float(log_std_init)))
        self.actor = orthogonal_linear(width, out_dim, 0.01)
        self.critic = orthogonal_linear(width, 1, 1.0)


def default_policy(env, hidden=(256, 256), activation: str = "tanh", log_std_init: float = 0.0,
                   core_size: int | None = None) -> ActorCritic:
    """``--policy default``: ``CNNPolicy`` for image observations (``training.encoders.is_image``)
    the Nature CNN can read, at least ``NATURE_MIN_SIDE`` pixels a side (``hidden`` are its linear
    layers after the convolutions, ``activation`` does not apply: the CNN is ReLU throughout);
    ``MLPPolicy`` for any other, small grids of bytes (7 x 7 x 3) included."""
    layout = image_layout(native_space(env))
    if layout is not None and min(layout[1][1:]) >= NATURE_MIN_SIDE:
        return CNNPolicy(env, hidden=hidden, core_size=core_size, log_std_init=log_std_init)
    return MLPPolicy(env, hidden=hidden, activation=activation, log_std_init=log_std_init, core_size=core_size)

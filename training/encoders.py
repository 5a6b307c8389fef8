"""Observation encoders: an env's observation space -> a torch module giving float features.

Every encoder maps a batch of observations as they travel (the env's buffers, the runners'
rollouts: ``env.single_observation_space``, in its own dtype) to ``(B, out_dim)`` float32
features; the policies in ``training.policy`` put their MLPs or heads on top.

- A Box (or MultiBinary) observation: flattened and cast to float, nothing else (the MLP's input
  since the first version).
- Dict, Tuple, Discrete and MultiDiscrete observations: PufferLib's emulation
  (``GymnasiumPufferEnv``, ``PettingZooPufferEnv``) packs them into one Box, of bytes when the
  parts' dtypes differ (``env.emulated`` holds the layout). ``StructuredEncoder`` rebuilds the
  parts (``pufferlib.pytorch.nativize_dtype``, then ``nativize_tensor``'s views) and encodes
  each: a Discrete(n, start) as a one-hot of ``value - start``, a MultiDiscrete as its
  components' one-hots concatenated, a Box or MultiBinary as its floats, Dicts and Tuples
  recursively. The parts are concatenated depth-first in the space's own order: a Dict's keys as
  the space lists them (Gymnasium sorts the keys of a plain dict), a Tuple's by index. A value
  outside its Discrete's range gives an all-zero one-hot. (``training.envs.discrete_obs`` declares
  int64 Discrete parts int32 before PufferLib emulates them, so its layout holds them.)
- Images, ``is_image``: a uint8 Box of 3 dims whose channel axis, the one of size <= 4, is at
  either end (checked first: C x H x W, then H x W x C; so a 4 x 84 x 4 box is channels-first).
  ``NatureCNN`` is the DQN/Atari network of ``pufferlib.models.Convolutional`` (conv 32 8x8/4,
  64 4x4/2, 64 3x3/1, ReLU, a linear layer of 512, ReLU; pixels divided by 255). It needs at
  least 36 pixels a side.

Observations stay in their dtype until an encoder casts them, one minibatch at a time: a batch of
84 x 84 x 4 frames travels and sits in the learner as bytes, 4x smaller than as floats.
"""

from __future__ import annotations

import numpy as np
import pufferlib.pytorch
import torch
from gymnasium import spaces
from torch import nn

from training.config import ConfigError
from training.envs.env_info import native_space_of

NATURE_MIN_SIDE = 36  # conv 8/4, 4/2, 3/1: the smallest side that leaves one pixel


def native_space(env):
    """The env's own observation space: ``EnvInfo.native_observation_space``, or for a PufferLib
    env handed over directly, the space its emulation wraps."""
    space = getattr(env, "native_observation_space", None)
    if space is not None:
        return space
    if getattr(env, "emulated", None):
        return native_space_of(getattr(env, "driver_env", env))
    return env.single_observation_space


def flat_size(space) -> int:
    """Floats in one flattened observation of a Box space."""
    if not hasattr(space, "shape") or space.shape is None or not len(space.shape):
        raise TypeError(f"unsupported observation space {space!r}: expected a Box")
    return int(np.prod(space.shape, dtype=np.int64))


# ------------------------------------------------------------------------------------------ images
def image_layout(space) -> tuple[bool, tuple[int, int, int]] | None:
    """(channels_last, (C, H, W)) when ``space`` is an image by the rule above, else None."""
    if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3):
        return None
    a, b, c = (int(x) for x in space.shape)
    if a <= 4:
        return False, (a, b, c)
    if c <= 4:
        return True, (c, a, b)
    return None


def is_image(space) -> bool:
    return image_layout(space) is not None


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class NatureCNN(nn.Module):
    """Images (B, H, W, C) or (B, C, H, W) of bytes -> (B, hidden[-1]) floats: three convolutions
    and ``hidden`` linear layers, ReLU throughout, orthogonal init of gain sqrt(2)
    (``pufferlib.pytorch.layer_init``), as ``pufferlib.models.Convolutional``. ``channels_last``:
    the layout, None to read it from ``space`` (``image_layout``)."""

    def __init__(self, space, hidden=(512,), channels_last: bool | None = None):
        super().__init__()
        if channels_last is None:
            layout = image_layout(space)
            if layout is None:
                raise ConfigError("--policy", f"the CNN needs image observations (a uint8 Box, H x W x C or "
                                              f"C x H x W with C <= 4), not {space}; --policy mlp flattens any Box")
            channels_last, (C, H, W) = layout
        else:
            if len(getattr(space, "shape", ()) or ()) != 3:
                raise ConfigError("--policy", f"the CNN needs 3-dimensional image observations, not {space}")
            channels_last = bool(channels_last)
            shape = tuple(int(x) for x in space.shape)
            C, H, W = (shape[2], shape[0], shape[1]) if channels_last else shape
        if min(H, W) < NATURE_MIN_SIDE:
            raise ConfigError("--policy", f"{H} x {W} images are too small for the Nature CNN (it needs at least "
                                          f"{NATURE_MIN_SIDE} pixels a side); choose another policy with --policy "
                                          "(--policy mlp flattens the pixels)")
        self.channels_last = channels_last
        self.shape = (C, H, W)
        h, w = H, W
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            h, w = _conv_out(h, kernel, stride), _conv_out(w, kernel, stride)
        layers: list[nn.Module] = [
            pufferlib.pytorch.layer_init(nn.Conv2d(C, 32, 8, stride=4)), nn.ReLU(),
            pufferlib.pytorch.layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            pufferlib.pytorch.layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
        ]
        width = 64 * h * w
        for size in hidden:
            layers += [pufferlib.pytorch.layer_init(nn.Linear(width, int(size))), nn.ReLU()]
            width = int(size)
        self.network = nn.Sequential(*layers)
        self.out_dim = width

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = observations.permute(0, 3, 1, 2) if self.channels_last else observations
        # contiguous: both layouts then run the same convolution, bit for bit
        return self.network(x.contiguous().float().div_(255.0))


# ------------------------------------------------------------------------------ structured spaces
class _Flat(nn.Module):
    """A Box or MultiBinary part: its values as floats."""

    def __init__(self, space):
        super().__init__()
        self.out_dim = flat_size(space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1).float()


class _OneHot(nn.Module):
    """A Discrete(n, start) or MultiDiscrete(nvec, start) part: one one-hot of ``value - start``
    per component, concatenated; ``out_dim`` = n or sum(nvec)."""

    def __init__(self, nvec, start):
        super().__init__()
        nvec = np.asarray(nvec, np.int64).reshape(-1)
        start = np.broadcast_to(np.asarray(start, np.int64), nvec.shape).reshape(-1)
        width = int(nvec.max())
        keep = np.concatenate([i * width + np.arange(n) for i, n in enumerate(nvec)])
        self.register_buffer("start", torch.from_numpy(start.copy()), persistent=False)
        self.register_buffer("positions", torch.arange(width), persistent=False)
        self.register_buffer("keep", torch.from_numpy(keep), persistent=False)
        self.out_dim = int(nvec.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = x.reshape(x.shape[0], -1).long() - self.start
        hot = index[..., None] == self.positions  # (B, components, width)
        return hot.reshape(x.shape[0], -1)[:, self.keep].float()


def _leaf_encoder(space) -> nn.Module:
    if isinstance(space, spaces.Discrete):
        return _OneHot([space.n], [space.start])
    if isinstance(space, spaces.MultiDiscrete):
        return _OneHot(space.nvec, space.start)
    if isinstance(space, (spaces.Box, spaces.MultiBinary)):
        return _Flat(space)
    raise TypeError(f"unsupported observation part {space!r}: expected Box, MultiBinary, Discrete, MultiDiscrete, "
                    "or a Dict or Tuple of those")


def _walk(space, native_dtype, path=()):
    """(path, leaf space, leaf layout) depth-first, in the order the encoder concatenates."""
    if isinstance(space, spaces.Dict):
        for key, sub in space.spaces.items():
            yield from _walk(sub, native_dtype[key], (*path, key))
    elif isinstance(space, spaces.Tuple):
        for i, sub in enumerate(space.spaces):
            yield from _walk(sub, native_dtype[f"f{i}"], (*path, i))
    else:
        yield path, space, native_dtype


def _nativize_leaf(observations: torch.Tensor, layout) -> torch.Tensor:
    """One part of an emulated batch (B, D), at ``layout`` = (dtype, shape, offset, length) from
    ``pufferlib.pytorch.nativize_dtype``: ``pufferlib.pytorch.nativize_tensor``'s arithmetic (its
    torch.compile size checks left out: this torch deprecates them, with a warning a call). Where
    torch refuses to view the slice as the part's dtype (its strides or offset), a copy of it."""
    dtype, shape, offset, delta = layout
    part = observations.narrow(1, offset, delta)
    try:
        part = part.view(dtype)
    except RuntimeError:
        part = part.contiguous().view(dtype)
    return part.reshape(observations.shape[0], *shape)


class StructuredEncoder(nn.Module):
    """Observations in PufferLib's emulated layout -> each part encoded, concatenated (see the
    module's docstring for the order). ``space``: the env's native observation space;
    ``emulated``: ``env.emulated``. ``parts`` lists each part's path (Dict keys, Tuple indices)."""

    def __init__(self, space, emulated):
        super().__init__()
        if not emulated:
            raise TypeError(f"a {type(space).__name__} observation space reaches a policy in PufferLib's emulated "
                            "layout, and this env has none (env.emulated); wrap the env in "
                            "pufferlib.emulation.GymnasiumPufferEnv")
        try:
            native_dtype = pufferlib.pytorch.nativize_dtype(emulated)
            leaves = list(_walk(space, native_dtype))
        except (AssertionError, KeyError, TypeError) as e:
            raise TypeError(f"cannot read the observation space {space} from PufferLib's emulated layout "
                            f"({type(e).__name__}: {e})") from None
        self.space = space
        self.transport_dtype = pufferlib.pytorch.numpy_to_torch_dtype_dict[np.dtype(emulated["observation_dtype"])]
        self.parts = [path for path, _, _ in leaves]
        self.layouts = [layout for _, _, layout in leaves]
        self.leaf_spaces = [leaf for _, leaf, _ in leaves]
        self.encoders = nn.ModuleList(_leaf_encoder(leaf) for leaf in self.leaf_spaces)
        self.out_dim = sum(e.out_dim for e in self.encoders)

    def leaves(self, observations: torch.Tensor) -> list[torch.Tensor]:
        """Each part's values (B, *shape) in its own dtype, in ``parts`` order."""
        if observations.dtype != self.transport_dtype:
            # a caller that cast the batch to floats (bytes and small integers are exact in
            # float32) gets the bytes back; a float view of float bytes would be nonsense
            observations = observations.to(self.transport_dtype)
        observations = observations.reshape(observations.shape[0], -1)
        return [_nativize_leaf(observations, layout) for layout in self.layouts]

    def nativize(self, observations: torch.Tensor):
        """The batch in the native structure: dicts for Dicts, tuples for Tuples; a Discrete part
        is (B,) values, start included, any other part (B, *its shape)."""
        leaves = iter(zip(self.leaf_spaces, self.leaves(observations)))

        def build(space):
            if isinstance(space, spaces.Dict):
                return {key: build(sub) for key, sub in space.spaces.items()}
            if isinstance(space, spaces.Tuple):
                return tuple(build(sub) for sub in space.spaces)
            leaf_space, value = next(leaves)
            if isinstance(leaf_space, spaces.Discrete):
                return value.reshape(-1)
            return value.reshape(value.shape[0], *leaf_space.shape)

        return build(self.space)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return torch.cat([enc(x) for enc, x in zip(self.encoders, self.leaves(observations))], dim=1)


def observation_encoder(env) -> nn.Module:
    """The flat encoder of ``env``'s observations (no CNN): ``_Flat`` for a Box observation (the
    observation itself, as floats), ``StructuredEncoder`` for anything PufferLib emulates."""
    space = native_space(env)
    if isinstance(space, spaces.Box):
        return _Flat(env.single_observation_space)
    if isinstance(space, (spaces.Dict, spaces.Tuple, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        return StructuredEncoder(space, getattr(env, "emulated", None))
    raise TypeError(f"unsupported observation space {space!r}")


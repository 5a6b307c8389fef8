"""What a policy factory sees of the env: ``factory(env, **kwargs)`` gets an ``EnvInfo``.

It carries PufferLib's names for one agent's spaces and, for an emulated env, its ``emulated``
layout (what ``pufferlib.pytorch.nativize_dtype`` reads), and nothing that needs the env running:
the learner has no env, yet must build the very policy the runners build. Light on purpose: the
driver receives one from the runners and loads neither torch nor PufferLib.

Two observation spaces: ``single_observation_space`` is what travels, the Box the env's buffers
hold and the runners record (for a Dict, Tuple, Discrete or MultiDiscrete observation PufferLib's
emulation packs the parts into one Box, usually of bytes); ``native_observation_space`` is the
env's own space, whose structure ``training.encoders`` rebuilds from those bytes. For a plain Box
observation the two are the same space.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class EnvInfo:
    single_observation_space: Any
    single_action_space: Any
    emulated: dict | None = None
    num_agents: int = 1
    native_observation_space: Any = None  # None: the same as single_observation_space

    def __post_init__(self):
        if self.native_observation_space is None:
            object.__setattr__(self, "native_observation_space", self.single_observation_space)

    # pufferlib.models.Default also reads these; for one agent they are the single spaces
    @property
    def observation_space(self):
        return self.single_observation_space

    @property
    def action_space(self):
        return self.single_action_space

    @classmethod
    def of(cls, vecenv) -> "EnvInfo":
        driver = getattr(vecenv, "driver_env", vecenv)
        emulated = getattr(driver, "emulated", None)  # False for a native PufferEnv
        return cls(vecenv.single_observation_space, vecenv.single_action_space, emulated,
                   num_agents=int(getattr(vecenv, "num_agents_per_env", 1)),  # training.envs.registry sets it
                   native_observation_space=native_space_of(driver) if emulated else None)


def native_space_of(driver):
    """The observation space of the env PufferLib emulates: PettingZooPufferEnv keeps it as
    ``env_single_observation_space``, GymnasiumPufferEnv as its wrapped env's ``observation_space``."""
    space = getattr(driver, "env_single_observation_space", None)
    if space is None:
        space = getattr(getattr(driver, "env", None), "observation_space", None)
    return space if space is not None else driver.single_observation_space

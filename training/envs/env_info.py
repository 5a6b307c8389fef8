"""What a policy factory sees of the env: ``factory(env, **kwargs)`` gets an ``EnvInfo``.

It carries PufferLib's names for one agent's spaces and, for an emulated env, its ``emulated``
layout (what ``pufferlib.pytorch.nativize_dtype`` reads), and nothing that needs the env running:
the learner has no env, yet must build the very policy the runners build. Light on purpose: the
driver receives one from the runners and loads neither torch nor PufferLib.
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
        return cls(vecenv.single_observation_space, vecenv.single_action_space, getattr(driver, "emulated", None))

"""Turn an ``--env`` value into a PufferLib vector env (the forms are listed in ``env_spec``).

- ``gym:<id>``: each env wrapped by PufferLib's emulation and vectorised with
  ``pufferlib.vector.make`` (Serial or Multiprocessing).
- ``pkg.module:factory`` (a plug-in's ``env`` included): if the factory accepts ``num_envs`` it
  must return one native PufferEnv holding that many agents; otherwise it is called once per env
  and may return a PufferEnv (single agent) or a Gymnasium env. ``--env-rules`` and
  ``--env-time-max`` reach a factory as its ``rules`` and ``time_max`` arguments when it takes
  them and they are set; ``--env-kwargs`` (``kwargs``) reaches a factory as keyword arguments, and
  a Gymnasium id as ``gymnasium.make(id, **kwargs)``.

Every vector env returned has PufferLib's buffers (observations, rewards, terminals, truncations)
and the attribute ``autoreset_same_step``: True when a finished env is reset inside the step that
ended it (native envs); False for PufferLib's emulated envs, which spend the following step on the
reset (that step's transition is a dummy and must not be learned from).
"""

from __future__ import annotations

import functools
import inspect

import gymnasium
import pufferlib
import pufferlib.emulation
import pufferlib.vector

from training.envs.env_spec import (EnvSpecError, check_env_spec, check_factory_kwargs, env_target, gym_id,
                                    resolve_factory)


def _gym_creator(env_id: str, kwargs: dict, buf=None, seed=0):
    return pufferlib.emulation.GymnasiumPufferEnv(env_creator=gymnasium.make, env_args=[env_id], env_kwargs=kwargs,
                                                  buf=buf, seed=seed)


def _factory_creator(factory, kwargs: dict, buf=None, seed=0):
    env = factory(**kwargs)
    if isinstance(env, pufferlib.PufferEnv):
        if env.num_agents != 1:
            raise EnvSpecError(f"{factory!r} returned a PufferEnv with {env.num_agents} agents; "
                               "a batched factory must accept num_envs")
        return env
    if isinstance(env, gymnasium.Env):
        return pufferlib.emulation.GymnasiumPufferEnv(env=env, buf=buf, seed=seed)
    raise EnvSpecError(f"{factory!r} returned {type(env).__name__}, expected a PufferEnv or a gymnasium.Env")




def make_vecenv(spec: str, num_envs: int, seed: int, *, rules: str | None = None, time_max: int | None = None,
                kwargs: dict | None = None, vector_backend: str = "serial"):
    check_env_spec(spec)
    target = env_target(spec)
    kwargs = dict(kwargs or {})
    if target.startswith("gym:"):
        creator = functools.partial(_gym_creator, gym_id(target), kwargs)
    else:
        factory = resolve_factory(spec)
        params = inspect.signature(factory).parameters
        # what the factory takes of the settings that are set; None leaves the env's own default
        settings = {k: v for k, v in dict(rules=rules, time_max=time_max).items() if v is not None and k in params}
        check_factory_kwargs(factory, spec, kwargs)
        settings.update(kwargs)
        if "num_envs" in params:
            env = factory(num_envs=num_envs, **settings, **({"seed": seed} if "seed" in params else {}))
            if not isinstance(env, pufferlib.PufferEnv) or env.num_agents != num_envs:
                raise EnvSpecError(f"--env {spec!r}: factory(num_envs={num_envs}) must return a PufferEnv "
                                   f"with {num_envs} agents")
            env.autoreset_same_step = True
            return env
        creator = functools.partial(_factory_creator, factory, settings)

    backend = {"serial": pufferlib.vector.Serial, "multiprocessing": pufferlib.vector.Multiprocessing}[vector_backend]
    # overwork: PufferLib refuses more worker processes than physical cores; a 2-vCPU VM has one.
    kwargs = {"num_workers": min(num_envs, 2), "overwork": True} if vector_backend == "multiprocessing" else {}
    vecenv = pufferlib.vector.make(creator, num_envs=num_envs, backend=backend, seed=seed, **kwargs)
    vecenv.autoreset_same_step = not vecenv.driver_env.emulated if hasattr(vecenv, "driver_env") else False
    return vecenv

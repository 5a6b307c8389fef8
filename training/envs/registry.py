"""Turn an ``--env`` value into a PufferLib vector env (the forms are listed in ``env_spec``).

- ``gym:<id>``: each env wrapped by PufferLib's emulation and vectorised with
  ``pufferlib.vector.make`` (Serial or Multiprocessing).
- ``pz:<id>``: a PettingZoo parallel env, ``pettingzoo.make("parallel", id, **kwargs)`` for an id
  of PettingZoo's registry (``pz:classic/rps-v2``), else ``pkg.module.parallel_env(**kwargs)``
  (``pz:my_pkg.my_env``), wrapped by ``pufferlib.emulation.PettingZooPufferEnv``.
- ``pkg.module:factory`` (a plug-in's ``env`` included): if the factory accepts ``num_envs`` it
  must return one native PufferEnv holding ``num_envs`` envs of k agents each (``num_agents`` =
  k x ``num_envs``); otherwise it is called once per env and may return a PufferEnv, a Gymnasium
  env or a PettingZoo parallel env. ``--env-rules`` and
  ``--env-time-max`` reach a factory as its ``rules`` and ``time_max`` arguments when it takes
  them and they are set; ``--env-kwargs`` (``kwargs``) reaches a factory as keyword arguments, and
  a Gymnasium id as ``gymnasium.make(id, **kwargs)``.

Multi-agent envs: every agent is a row of the batch, and all agents must share one observation
space and one action space. The vector env's ``num_agents_per_env`` says how many rows one env holds;
PufferLib's ``masks`` buffer marks the rows whose agent is absent (dead, or not yet there).

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

from training.envs.discrete_obs import Int32Discretes, Int32DiscretesParallel, needs_int32
from training.envs.env_spec import (EnvSpecError, check_env_spec, check_factory_kwargs, env_target, gym_id,
                                    pz_parallel_env, resolve_factory)


def _gymnasium_env(env: gymnasium.Env, buf=None, seed=0):
    if needs_int32(env.observation_space):
        env = Int32Discretes(env)
    return pufferlib.emulation.GymnasiumPufferEnv(env=env, buf=buf, seed=seed)


def _gym_creator(env_id: str, kwargs: dict, buf=None, seed=0):
    return _gymnasium_env(gymnasium.make(env_id, **kwargs), buf=buf, seed=seed)


def _pettingzoo_env(env, what: str, buf=None, seed=0):
    """``env`` (a PettingZoo parallel env) as a PufferEnv, once its agents are known to share spaces."""
    agents = list(env.possible_agents)
    if not agents:
        raise EnvSpecError(f"{what}: the PettingZoo env has no possible_agents")
    first = agents[0]
    for kind in ("observation_space", "action_space"):
        space = getattr(env, kind)
        odd = [a for a in agents[1:] if space(a) != space(first)]
        if odd:
            raise EnvSpecError(f"{what}: agent {odd[0]!r} has the {kind.replace('_', ' ')} {space(odd[0])}, but "
                               f"agent {first!r} has {space(first)}; every agent is a row of one batch, so all "
                               "agents must share their spaces (pad them to one space in a wrapper)")
    if needs_int32(env.observation_space(first)):
        env = Int32DiscretesParallel(env)
    return pufferlib.emulation.PettingZooPufferEnv(env=env, buf=buf, seed=seed)


def _pz_creator(target: str, kwargs: dict, buf=None, seed=0):
    make, name = pz_parallel_env(target)
    return _pettingzoo_env(make(name, **kwargs), f"--env {target}", buf=buf, seed=seed)


def _is_parallel_env(env) -> bool:
    """A PettingZoo parallel env, by its API (PettingZoo need not be installed to train others)."""
    return all(callable(getattr(env, name, None)) for name in ("observation_space", "action_space", "step")) \
        and hasattr(env, "possible_agents")


def _factory_creator(factory, kwargs: dict, buf=None, seed=0):
    env = factory(**kwargs)
    if isinstance(env, pufferlib.PufferEnv):
        return env
    if isinstance(env, gymnasium.Env):
        return _gymnasium_env(env, buf=buf, seed=seed)
    if _is_parallel_env(env):
        return _pettingzoo_env(env, f"{factory!r}", buf=buf, seed=seed)
    raise EnvSpecError(f"{factory!r} returned {type(env).__name__}, expected a PufferEnv, a gymnasium.Env "
                       "or a PettingZoo parallel env")



def make_vecenv(spec: str, num_envs: int, seed: int, *, rules: str | None = None, time_max: int | None = None,
                kwargs: dict | None = None, vector_backend: str = "serial"):
    check_env_spec(spec)
    target = env_target(spec)
    kwargs = dict(kwargs or {})
    if target.startswith("gym:"):
        creator = functools.partial(_gym_creator, gym_id(target), kwargs)
    elif target.startswith("pz:"):
        pz_parallel_env(target)  # an unknown id fails here, once, not in every env's creator
        creator = functools.partial(_pz_creator, target, kwargs)
    else:
        factory = resolve_factory(spec)
        params = inspect.signature(factory).parameters
        # what the factory takes of the settings that are set; None leaves the env's own default
        settings = {k: v for k, v in dict(rules=rules, time_max=time_max).items() if v is not None and k in params}
        check_factory_kwargs(factory, spec, kwargs)
        settings.update(kwargs)
        if "num_envs" in params:
            env = factory(num_envs=num_envs, **settings, **({"seed": seed} if "seed" in params else {}))
            if not isinstance(env, pufferlib.PufferEnv) or env.num_agents % num_envs:
                raise EnvSpecError(f"--env {spec!r}: factory(num_envs={num_envs}) must return a PufferEnv "
                                   f"whose num_agents is a multiple of {num_envs} (k agents per env)")
            env.autoreset_same_step = True
            env.num_agents_per_env = env.num_agents // num_envs
            return env
        creator = functools.partial(_factory_creator, factory, settings)

    backend = {"serial": pufferlib.vector.Serial, "multiprocessing": pufferlib.vector.Multiprocessing}[vector_backend]
    # overwork: PufferLib refuses more worker processes than physical cores; a 2-vCPU VM has one.
    kwargs = {"num_workers": min(num_envs, 2), "overwork": True} if vector_backend == "multiprocessing" else {}
    vecenv = pufferlib.vector.make(creator, num_envs=num_envs, backend=backend, seed=seed, **kwargs)
    vecenv.autoreset_same_step = not vecenv.driver_env.emulated if hasattr(vecenv, "driver_env") else False
    vecenv.num_agents_per_env = vecenv.num_agents // num_envs  # (Serial's own agents_per_env is a list)
    return vecenv

"""Checking an ``--env`` value before anything starts, without importing PufferLib or torch (the
driver calls this; ``registry.make_vecenv`` builds the env inside the actors).

An ``--env`` value is one of: the name of a registered env plug-in (``plugin.EnvPlugin``), which
stands for the plug-in's own ``env`` value; ``gym:<Gymnasium id>`` (``gym:pkg.module:Id`` imports
the module that registers the id first, as ``gymnasium.make`` does); ``pz:<PettingZoo id>`` (PettingZoo's
registry, ``pz:classic/rps-v2``) or ``pz:<pkg.module>`` (a module whose ``parallel_env(**kwargs)``
builds the env), a PettingZoo parallel env; ``pkg.module:factory``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import gymnasium

from training.envs.plugin import PluginError, check_ref, find_plugin, is_ref, plugin_names, resolve_ref


class EnvSpecError(ValueError):
    """An ``--env`` value that cannot be turned into an env."""


def env_settings(config: dict) -> dict:
    """The env settings a run's config passes to its env's factory (``registry.make_vecenv``) and
    tool hooks: ``rules`` and ``time_max``, None where the env's own defaults apply."""
    return dict(rules=config.get("env_rules"), time_max=config.get("env_time_max"))


def env_build_settings(config: dict) -> dict:
    """``env_settings`` and ``kwargs`` (``--env-kwargs``): everything ``registry.make_vecenv``
    needs to build a run's env."""
    return dict(env_settings(config), kwargs=dict(config.get("env_kwargs") or {}))


def env_target(spec: str) -> str:
    """What ``spec`` stands for: a plug-in's ``env`` value, else ``spec`` itself."""
    plugin = find_plugin(spec)
    return plugin.env if plugin is not None else spec


def resolve_factory(spec: str):
    try:
        factory = resolve_ref(env_target(spec), "factory")
    except PluginError as e:
        raise EnvSpecError(f"--env {spec!r}: {e}") from None
    if not callable(factory):
        raise EnvSpecError(f"--env {spec!r}: {env_target(spec)} is not callable")
    return factory


def gym_id(target: str) -> str:
    """The Gymnasium id of a ``gym:`` target, after importing the module it names, if any."""
    env_id = target[len("gym:"):]
    if is_ref(env_id):  # gym:pkg.module:Id, as gymnasium.make("pkg.module:Id") takes it
        module, _, env_id = env_id.partition(":")
        try:
            __import__(module)
        except ImportError as e:
            raise EnvSpecError(f"--env {target!r}: cannot import {module!r} ({e})") from None
    return env_id


def pz_parallel_env(target: str):
    """``(make, argument)`` for a ``pz:`` target: PettingZoo's registry for an id it knows
    (``pz:classic/rps-v2`` -> ``pettingzoo.make("parallel", id, **kwargs)``), else the
    ``parallel_env`` of the module named (``pz:my_pkg.my_env``). Checked, not built."""
    name = target[len("pz:"):]
    try:
        import pettingzoo
    except ImportError as e:
        raise EnvSpecError(f"--env {target!r}: PettingZoo is not installed ({e}); pip install pettingzoo") from None
    if name in pettingzoo.parallel_registry:
        return (lambda env_id, **kwargs: pettingzoo.make("parallel", env_id, **kwargs)), name
    try:
        found = bool(name) and importlib.util.find_spec(name) is not None
    except (ImportError, ValueError) as e:  # a parent package fails to import, or is missing
        raise EnvSpecError(f"--env {target!r}: cannot import {name!r} ({e})") from None
    if not found:
        known = ", ".join(sorted(pettingzoo.parallel_registry)[:3])
        raise EnvSpecError(f"--env {target!r}: {name!r} is neither a PettingZoo parallel env id (such as {known}) "
                           "nor a module with a parallel_env() function")
    return (lambda module, **kwargs: importlib.import_module(module).parallel_env(**kwargs)), name


def check_factory_kwargs(factory, spec: str, kwargs: dict | None) -> None:
    """``--env-kwargs`` keys a factory does not take (it has no ``**kwargs``) fail, by name."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs or {}) - set(params))
    if unknown:
        raise EnvSpecError(f"--env-kwargs: the factory of --env {spec!r} takes no argument "
                           f"{', '.join(map(repr, unknown))} (it takes {', '.join(params) or 'none'})")


def env_build_error(spec: str, kwargs: dict | None, error: BaseException) -> ValueError:
    """The error to report for an env the runners could not build: the runner's own when it names
    a setting (``EnvSpecError``, ``ConfigError``), else one naming the env (and ``--env-kwargs``)."""
    if isinstance(error, EnvSpecError) or (isinstance(error, ValueError) and hasattr(error, "flag")):
        return error  # hasattr: a training.config.ConfigError, which this module cannot import
    given = f" with --env-kwargs {kwargs}" if kwargs else ""
    return EnvSpecError(f"--env {spec!r}: the env could not be built{given} ({type(error).__name__}: {error})")


def check_env_spec(spec: str, kwargs: dict | None = None) -> None:
    """Fail fast (before any actor starts) on an env value that cannot work, and on ``kwargs``
    (``--env-kwargs``) a factory named directly does not take."""
    target = env_target(spec)
    if target.startswith("gym:"):
        env_id = gym_id(target)
        if env_id not in gymnasium.registry:
            raise EnvSpecError(f"--env {spec!r}: unknown Gymnasium id {env_id!r}")
    elif target.startswith("pz:"):
        pz_parallel_env(target)
    elif find_plugin(spec) is not None:
        try:
            check_ref(target, f"env plug-in {spec!r}: env")  # found, not imported: the driver stays light
        except PluginError as e:
            raise EnvSpecError(f"--env {spec!r}: {e}") from None
    elif is_ref(target):
        check_factory_kwargs(resolve_factory(spec), spec, kwargs)
    else:
        names = ", ".join(plugin_names()) or "none installed"
        raise EnvSpecError(f"--env {spec!r}: unknown env; use a registered env ({names}), "
                           "'gym:<Gymnasium id>', 'pz:<PettingZoo env module>' or 'package.module:factory'")


def probe_action_space(spec: str, kwargs: dict | None = None):
    """The action space of one env of ``spec``, built once and closed, for the per-space defaults
    of an env without a preset (``config.SPACE_DEFAULTS``); None when it cannot be built here (the
    runners then report the real error). A ``gym:`` id needs only Gymnasium; a factory is called
    as the runners call it (``num_envs=1`` when it takes it, and ``kwargs``), so its imports load
    here too."""
    target = env_target(spec)
    kwargs = dict(kwargs or {})
    try:
        if target.startswith("gym:"):
            env = gymnasium.make(gym_id(target), **kwargs)
        elif target.startswith("pz:"):
            make, name = pz_parallel_env(target)
            env = make(name, **kwargs)
        else:
            factory = resolve_factory(spec)
            takes_num_envs = "num_envs" in inspect.signature(factory).parameters
            env = factory(num_envs=1, **kwargs) if takes_num_envs else factory(**kwargs)
    except Exception:  # noqa: BLE001 - any failure here is reported where the env is really built
        return None
    try:
        if callable(getattr(env, "action_space", None)):  # a PettingZoo env: one agent's space
            return env.action_space(env.possible_agents[0])
        return getattr(env, "single_action_space", None) or env.action_space
    finally:
        close = getattr(env, "close", None)
        if callable(close):
            close()

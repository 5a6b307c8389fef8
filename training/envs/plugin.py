"""The extension point an env plugs in through: what it brings to the trainer besides itself.

An env package registers an ``EnvPlugin`` under the entry-point group ``prospector_trainer.envs``,
in its ``pyproject.toml``::

    [project.entry-points."prospector_trainer.envs"]
    my_env = "my_pkg.plugin:PLUGIN"

``--env <plugin.name>`` then builds its env with its preset under the user's flags, and the
policies and behaviours it names become values of ``--policy``, ``--policy-prior`` and
``--kickstart-teacher``. Code is referenced as ``"pkg.module:attr"`` strings and imported only
where it runs, so reading a plug-in (the driver does, to resolve settings) loads neither torch nor
the env. An env needs no plug-in to be trained: ``--env pkg.module:factory`` and ``--env gym:<id>``
work without one (docs/EXTENDING.md).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import importlib.util
import re
from typing import Any, Callable, Mapping

ENTRY_POINT_GROUP = "prospector_trainer.envs"
# Optional functions a plug-in's ``tools`` module may define; the CLI's tools call them when present.
TOOL_HOOKS = (
    # (episodes, seed0, rules=, time_max=) -> {name: evaluate.summarize(...)}: rows beside the policy in `eval`
    "baselines",
    # tuple of (summary key, header, format): the `eval` table's columns after the return's
    "eval_columns",
    # (episodes, seed0, rules=, time_max=) -> {name: mean return}: reference lines in `plot`
    "reference_returns",
    # (act, seed, rules=, time_max=, max_steps=) -> episode dict with frames (see replays.record_episode)
    "record_replay",
    # (figure, frames) -> None: the picture `replay` draws of one episode
    "draw_replay",
)
# --policy names every env has; an env's plug-in adds its own. default: the CNN for image
# observations, the MLP for any other (training.policy.default_policy)
BUILTIN_POLICIES = {"default": "training.policy:default_policy", "mlp": "training.policy:MLPPolicy",
                    "cnn": "training.policy:CNNPolicy"}
_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class PluginError(ValueError):
    """A plug-in or a ``pkg.module:attr`` reference that cannot be used."""


@dataclasses.dataclass(frozen=True)
class EnvPlugin:
    """``name``: the ``--env`` value. ``env``: ``"pkg.module:factory"`` (``factory(num_envs, seed,
    ...)`` returns a native PufferEnv, see ``registry.make_vecenv``) or ``"gym:<id>"``. ``preset``:
    settings (TrainConfig field names) under the user's flags. ``policies`` and ``behaviours``:
    names for ``"pkg.module:attr"`` references (a policy factory ``f(env, **kwargs)``; a
    behaviour ``f(observations) -> actions``, a prior or teacher). ``configure(settings) ->
    settings``: fills and checks the settings this env owns (raise ``training.config.ConfigError``);
    it runs on every resolved config. ``tools``: a module defining some of ``TOOL_HOOKS``.
    ``settings``: TrainConfig fields only this env uses (``train --help`` lists them under its name).
    ``checkpoint_types``: ``"pkg.module:Class"`` references of the classes the env's ``get_state``
    snapshot holds beyond plain data (dicts, lists, numbers, strings, NumPy arrays): the only
    classes checkpoints may build when they load (``training.checkpoint_codec``)."""

    name: str
    env: str
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    policies: Mapping[str, str] = dataclasses.field(default_factory=dict)
    behaviours: Mapping[str, str] = dataclasses.field(default_factory=dict)
    configure: Callable[[dict], dict] | None = None
    tools: str | None = None
    settings: tuple[str, ...] = ()
    checkpoint_types: tuple[str, ...] = ()


@functools.cache
def _plugins() -> dict[str, EnvPlugin]:
    found: dict[str, EnvPlugin] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as e:  # a broken third-party plug-in must name itself
            raise PluginError(f"env plug-in {ep.name!r} ({ep.value}) does not load: {type(e).__name__}: {e}") from e
        if not isinstance(plugin, EnvPlugin):
            raise PluginError(f"env plug-in {ep.name!r} ({ep.value}) is a {type(plugin).__name__}, not an EnvPlugin")
        if plugin.name in found:
            raise PluginError(f"two env plug-ins are named {plugin.name!r}")
        found[plugin.name] = plugin
    return found


def find_plugin(env: str) -> EnvPlugin | None:
    """The plug-in registered for ``--env env``, or None."""
    return _plugins().get(env)


def plugin_names() -> list[str]:
    return sorted(_plugins())


def is_ref(text: Any) -> bool:
    return isinstance(text, str) and bool(_REF.match(text))


def check_ref(ref: str, what: str) -> None:
    """Fail unless ``ref`` is ``pkg.module:attr`` with a module that can be found. The module itself
    is not imported (its parent packages are), so the driver can check a policy's module without
    loading torch."""
    if not is_ref(ref):
        raise PluginError(f"{what} {ref!r}: expected pkg.module:name")
    module = ref.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except ImportError as e:  # a parent package fails to import
        raise PluginError(f"{what} {ref!r}: cannot import {module!r} ({e})") from None
    if not found:
        raise PluginError(f"{what} {ref!r}: no module named {module!r}")


def resolve_ref(ref: str, what: str = "reference"):
    """The object ``ref`` (``pkg.module:attr``, attr may be dotted) names."""
    if not is_ref(ref):
        raise PluginError(f"{what} {ref!r}: expected pkg.module:name")
    module_name, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise PluginError(f"{what} {ref!r}: cannot import module {module_name!r} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {ref!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def named_ref(value: str, names: Mapping[str, str], what: str, env: str) -> str:
    """``value`` as a ``pkg.module:attr`` reference: a name from ``names`` (what the env's plug-in,
    or the trainer, offers) or a reference given as is."""
    if value in names:
        return names[value]
    if is_ref(value):
        return value
    offered = ", ".join(sorted(names)) or "none"
    raise PluginError(f"{what} {value!r}: not a pkg.module:name reference, and not a name "
                      f"--env {env} offers ({offered})")


def policy_ref(value: str, env: str) -> str:
    """``--policy``: a built-in name, a name the env's plug-in registers, or pkg.module:factory."""
    plugin = find_plugin(env)
    return named_ref(value, {**BUILTIN_POLICIES, **(plugin.policies if plugin else {})}, "--policy", env)


def behaviour_ref(value: str, env: str, flag: str) -> str:
    """A prior or teacher (``flag``): a name the env's plug-in registers, or pkg.module:callable."""
    plugin = find_plugin(env)
    return named_ref(value, plugin.behaviours if plugin else {}, flag, env)


def checkpoint_types() -> list:
    """The classes every installed plug-in declares for its env's snapshots (``checkpoint_types``):
    a checkpoint of any run may hold them, and nothing else beyond plain data."""
    return [resolve_ref(ref, f"env plug-in {p.name!r}: checkpoint_types")
            for p in _plugins().values() for ref in p.checkpoint_types]


def tool(env: str | None, hook: str):
    """The plug-in's ``hook`` (one of TOOL_HOOKS) for ``env``, or None."""
    if hook not in TOOL_HOOKS:
        raise ValueError(f"unknown tool hook {hook!r}")
    plugin = find_plugin(env) if env else None
    if plugin is None or plugin.tools is None:
        return None
    return getattr(importlib.import_module(plugin.tools), hook, None)

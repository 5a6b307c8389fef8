"""Checking an ``--env`` string before anything starts, without importing PufferLib or torch (the
driver calls this; ``registry.make_vecenv`` builds the env inside the actors)."""

from __future__ import annotations

import importlib

import gymnasium


class EnvSpecError(ValueError):
    """An ``--env`` value that cannot be turned into an env."""


def resolve_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise EnvSpecError(f"--env {spec!r}: cannot import module {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EnvSpecError(f"--env {spec!r}: module {module_name!r} has no callable {attr!r}")
    return factory


def check_env_spec(spec: str) -> None:
    """Fail fast (before any actor starts) on an env string that cannot work."""
    if spec == "prospector":
        return
    if spec.startswith("gym:"):
        env_id = spec[4:]
        if env_id not in gymnasium.registry:
            raise EnvSpecError(f"--env {spec!r}: unknown Gymnasium id {env_id!r}")
        return
    if ":" in spec:
        resolve_factory(spec)
        return
    raise EnvSpecError(f"--env {spec!r}: unknown env; use 'prospector', 'gym:<Gymnasium id>' or 'package.module:factory'")

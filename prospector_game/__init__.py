"""Asteroid Belt Prospector: the flagship game, packaged as an env plug-in of the trainer.

Everything only the game uses lives here: the vectorized simulator (``env.ProspectorEnv``), its
Gymnasium view, the scripted bots, the game's policies, its preset and its tool hooks
(``plugin.PLUGIN``, registered under the entry-point group ``prospector_trainer.envs``). The
trainer never imports this package; it finds the plug-in through that entry point.

Importing the package registers the Gymnasium ids ``AsteroidProspector-v2`` and
``AsteroidProspector-v1`` (single-env view). It stays light: no torch, no PufferLib.
"""

from gymnasium.envs.registration import register, registry

for _version in ("v2", "v1"):
    _id = f"AsteroidProspector-{_version}"
    if _id not in registry:  # re-import (or importlib.reload) must not fail
        register(id=_id, entry_point="prospector_game.gym_env:ProspectorGymEnv", kwargs={"rules": _version})

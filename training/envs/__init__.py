"""Environments. Importing this package registers the Gymnasium ids AsteroidProspector-v2 and
AsteroidProspector-v1 (single-env view; the vectorized PufferLib env is
training.envs.prospector.ProspectorEnv)."""

from gymnasium.envs.registration import register, registry

for _version in ("v2", "v1"):
    _id = f"AsteroidProspector-{_version}"
    if _id not in registry:  # re-import (or importlib.reload) must not fail
        register(id=_id, entry_point="training.envs.prospector_gym:ProspectorGymEnv",
                 kwargs={"rules": _version})

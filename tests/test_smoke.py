"""The installed environment works: the heavy imports load and an embedded Ray starts on loopback."""

import importlib


def test_imports_from_installed_env():
    for name in ("pufferlib", "pufferlib.vector", "ray", "torch", "wandb", "ray_app", "training"):
        importlib.import_module(name)
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_embedded_ray_on_loopback():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 1
        assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    finally:
        ray.shutdown()
    assert not ray.is_initialized()

"""The installed environment works: the heavy imports load and an embedded Ray starts on loopback."""

import importlib


def test_imports_from_installed_env():
    for name in ("pufferlib", "pufferlib.vector", "ray", "torch", "wandb", "ray_app", "training"):
        importlib.import_module(name)
    import torch

    assert torch.__version__.startswith("2.13.0")


def test_embedded_ray_on_loopback():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, configure_logging=False)
    try:
        nodes = [n for n in ray.nodes() if n["Alive"]]
        assert len(nodes) == 1
        assert nodes[0]["NodeManagerAddress"] == "127.0.0.1"
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    finally:
        ray.shutdown()
    assert not ray.is_initialized()


def test_embedded_run_ignores_a_stale_cluster_address(monkeypatch):
    """A leftover /tmp/ray/ray_current_cluster (a killed head, someone's `ray start`) must not turn
    an embedded run into an attempt to join that cluster (CI once failed exactly so)."""
    import ray
    from ray._private import services

    from ray_app.driver import _start_ray
    from training.config import TrainConfig

    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: "127.0.0.1:1")
    cfg = TrainConfig(env="gym:CartPole-v1", ppo_num_workers=1, learner_num_cpus=1.0)
    try:
        assert _start_ray(cfg) is True
        assert ray.get(ray.remote(lambda: 7).remote()) == 7
    finally:
        ray.shutdown()

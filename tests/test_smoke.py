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

    from ray_app.startup import start_ray
    from training.config import TrainConfig

    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: "127.0.0.1:1")
    cfg = TrainConfig(env="gym:CartPole-v1", ppo_num_workers=1, learner_num_cpus=1.0)
    try:
        assert start_ray(cfg) is True
        assert ray.get(ray.remote(lambda: 7).remote()) == 7
    finally:
        ray.shutdown()


def test_embedded_ray_runs_without_its_unused_head_services():
    """The autoscaler monitor and the API server of an embedded node have no work (no cluster
    config; no dashboard) and take ~130 MiB: they are stopped once the node is up, and Ray still
    schedules work, reports the node alive, and shuts down leaving nothing behind."""
    import time

    import psutil
    import ray

    from ray_app.local_ray import start_local_ray

    earlier = {p.pid for p in psutil.Process().children(recursive=True)}  # e.g. a wandb service

    def children() -> list[str]:
        procs = psutil.Process().children(recursive=True)
        return [" ".join(p.cmdline()) for p in procs if p.pid not in earlier and p.is_running()]

    try:
        assert start_local_ray(num_cpus=1) == ["monitor", "dashboard"]
        running = children()
        assert not [c for c in running if "autoscaler/_private/monitor.py" in c or "dashboard/dashboard.py" in c]
        assert [c for c in running if "gcs_server" in c] and [c for c in running if "log_monitor.py" in c]
        time.sleep(2)  # a monitor killed with SIGTERM would now be reported to the driver as failed
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
        assert [n["Alive"] for n in ray.nodes()] == [True]
    finally:
        ray.shutdown()
    deadline = time.time() + 10
    while children() and time.time() < deadline:
        time.sleep(0.2)
    assert children() == []

"""Starting a run: Ray started or joined (``start_ray``), and the run directory created or opened
for a resume (``open_store``). Failures here name their cause in one line (the driver records a
Ray that cannot be reached as a failed run, which ``--resume`` later starts from zero)."""

from __future__ import annotations

import os
import socket

import ray

from ray_app.local_ray import start_local_ray
from training.checkpoints import CheckpointError, CheckpointFormatError
from training.config import TrainConfig
from training.run_store import RunStore, default_run_id


class RayUnavailable(RuntimeError):
    """Ray could not be started or joined (one line names the cause)."""


def start_ray(cfg: TrainConfig) -> bool:
    """Join the cluster named by --address or RAY_ADDRESS (set by `ray job submit`), else start an
    embedded local Ray sized so the configured actors fit. Returns True if we connected."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        check_reachable(address)
        ray.init(address=address)
        return True
    need = cfg.ppo_num_workers * cfg.runner_num_cpus + cfg.learner_num_cpus * cfg.num_learners
    # Ray's CPUs may outnumber the cores here (one runner + a 2-CPU learner on 2 cores): in
    # overlapped mode the learner keeps off the runners' cores while they sample (placement.CoreShare),
    # so OpenMP keeps its default short spin-wait, which a 2-thread update needs to be fast.
    start_local_ray(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)))
    return True


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail in seconds when nothing answers at a ``host:port`` address: ``ray.init`` retries a
    wrong address for minutes before it gives up. Other forms (``auto``, ``ray://``) go to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConnectionError(f"nothing answers at {address} ({e.strerror or e}); is the cluster up, and is "
                              "--address (or RAY_ADDRESS) its head's GCS address, host:6379?") from None


def open_store(cfg: TrainConfig) -> RunStore:
    if cfg.resume:
        store = RunStore.open(cfg.resume)
        cfg.run_id = store.run_id
        # A missing or corrupt newest checkpoint fails here, before anything of the run changes.
        checkpoints = store.list_checkpoints()
        if not checkpoints and never_began(store):
            print(f"{store.run_dir}: no window or checkpoint yet; starting the run again from zero", flush=True)
            cfg.resume = None  # a fresh start in this directory: new metadata, no state to restore
            return store
        if not checkpoints:  # checkpoints written and gone, or a run never started: nothing to go on from
            raise CheckpointError(f"{store.checkpoints_dir}: no checkpoint to resume from")
        try:
            store.load_checkpoint(checkpoints[-1])
        except CheckpointFormatError:
            raise  # the run's other checkpoints share the format: no older one to fall back on
        except CheckpointError as e:
            raise CheckpointError(f"{e} (move it aside to resume from the previous checkpoint)") from None
        return store
    cfg.run_id = cfg.run_id or default_run_id()
    store = RunStore.create(cfg.run_root, cfg.run_id)
    store.write_config(cfg.to_dict())
    return store


def never_began(store: RunStore) -> bool:
    """True for a run that failed before its first window: its metadata says so (a failure at start
    writes it), and it has no window row and never named a checkpoint."""
    meta = store.read_metadata()
    return meta is not None and meta.get("latest_checkpoint") is None and not store.read_windows()

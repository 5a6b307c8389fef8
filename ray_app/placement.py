"""Where actors run and how many threads they may use.

Runners are spread over nodes by default (``--runner-placement spread``) so a multi-node cluster
samples in parallel; ``pack`` keeps them together. The learner goes where a GPU is when it uses
CUDA, or onto the node carrying ``--learner-resource``.
"""

from __future__ import annotations

import os
import threading
import time

import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from training.config import ConfigError, TrainConfig


def set_torch_threads() -> int:
    """Use exactly the CPUs Ray assigned this actor: two actors on two cores must not each take
    both (the cluster launcher exports OMP_NUM_THREADS=1, which would also be wrong for a learner
    given several CPUs)."""
    import torch  # here: the driver imports this module and must not load torch

    cpus = 1.0  # not inside a Ray worker (tests calling the class directly)
    if ray.is_initialized():  # get_runtime_context() would otherwise start a Ray instance
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(cpus))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads


def node_cores() -> int:
    """The cores this process may run on (a container's affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class CoreShare:
    """The thread count of a learner update whose node's cores are shared with sampling runners.

    The embedded driver gives Ray enough CPUs for every actor even on 2 cores, so in overlapped
    mode a 2-thread learner update and a sampling runner oversubscribe them: each of the update's
    parallel ops then waits for whichever thread the runner displaced: several times slower than
    either thread count alone (docs/BENCHMARKS.md, "Core sharing"). So the update uses
    ``threads_while_sampling`` threads until ``sampling_done()`` and all ``threads`` afterwards.
    ``poll`` runs between minibatches and, with ``module`` (the policy being trained), before
    each of its submodules' forward passes and as each parameter's gradient is accumulated: a
    minibatch on one thread takes ~0.1 s at 256 envs, so checking between minibatches alone left
    the freed core idle for half of one, on average, every round. ``sampling_done`` must be cheap
    (``SamplingWatch``)."""

    def __init__(self, sampling_done, threads_while_sampling: int, threads: int, module=None):
        import torch  # here: the driver imports this module and must not load torch

        self._torch = torch
        self.threads = threads
        self.sampling_done = sampling_done if threads_while_sampling < threads else None
        self.started = time.perf_counter()
        self.narrowed_s = 0.0  # how long the update ran on fewer threads (a window metric)
        self._hooks = []
        if self.sampling_done is not None:
            torch.set_num_threads(threads_while_sampling)
            if module is not None:
                self._hooks = [m.register_forward_pre_hook(lambda *_: self.poll()) for m in module.modules()]
                self._hooks += [p.register_post_accumulate_grad_hook(lambda _: self.poll())
                                for p in module.parameters() if p.requires_grad]

    def poll(self) -> None:
        if self.sampling_done is not None and self.sampling_done():
            self.release()

    def release(self) -> None:
        if self.sampling_done is not None:
            self.narrowed_s = time.perf_counter() - self.started
        self.sampling_done = None
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self._torch.get_num_threads() != self.threads:
            self._torch.set_num_threads(self.threads)


class SamplingWatch:
    """Whether every object in ``refs`` exists (nothing fetched), as a call that costs nanoseconds:
    a background thread waits on them, so ``CoreShare`` may ask thousands of times a round.
    ``close`` ends the wait early (an update that finished before the runners)."""

    def __init__(self, refs: list):
        self._ready = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._wait, args=(list(refs),), daemon=True,
                                        name="sampling-watch")
        self._thread.start()

    def _wait(self, pending: list) -> None:
        while pending and not self._closed.is_set():
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5, fetch_local=False)
        if not pending:
            self._ready.set()

    def __call__(self) -> bool:
        return self._ready.is_set()

    def close(self) -> None:
        self._closed.set()


def runner_placement_group(cfg: TrainConfig):
    """``pack``: one PACK placement group, so runners share as few nodes as possible (fast object
    transfers to a co-located learner). ``spread`` needs none: Ray's SPREAD strategy is best-effort
    and still places runners when there are more runners than nodes."""
    if cfg.runner_placement != "pack":
        return None
    pg = placement_group([runner_bundle(cfg)] * cfg.ppo_num_workers, strategy="PACK")
    ray.get(pg.ready(), timeout=120)
    return pg


def runner_bundle(cfg: TrainConfig) -> dict:
    """One runner's resources: its CPUs, and its share of a GPU with --runner-device cuda."""
    return {"CPU": cfg.runner_num_cpus, **({"GPU": cfg.runner_num_gpus} if cfg.runner_device == "cuda" else {})}


def runner_options(cfg: TrainConfig, index: int, pg=None) -> dict:
    gpus = {"num_gpus": cfg.runner_num_gpus} if cfg.runner_device == "cuda" else {}
    if pg is None:
        return dict(num_cpus=cfg.runner_num_cpus, scheduling_strategy="SPREAD", **gpus)
    strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)
    return dict(num_cpus=cfg.runner_num_cpus, scheduling_strategy=strategy, **gpus)


def learner_options(cfg: TrainConfig, device: str) -> dict:
    # an explicit strategy: a run started inside a placement group (a Ray Tune trial's) must not
    # have its learner captured into that group, whose bundles hold only the trial's own process
    opts: dict = dict(num_cpus=cfg.learner_num_cpus, scheduling_strategy="DEFAULT")
    if device == "cuda":
        opts["num_gpus"] = cfg.learner_num_gpus
    if cfg.learner_resource:
        opts["resources"] = {cfg.learner_resource: 0.001}
    return opts


def cluster_device(requested: str) -> str:
    """``auto`` means CUDA when the cluster offers a GPU (the learner may not run on this node)."""
    if requested != "auto":
        return requested
    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def _needed_bundles(cfg: TrainConfig, device: str) -> list[dict]:
    bundles = [runner_bundle(cfg)] * cfg.ppo_num_workers
    if cfg.trainer_backend == "puffer_ppo":
        learner = {"CPU": cfg.learner_num_cpus, **({"GPU": cfg.learner_num_gpus} if device == "cuda" else {})}
        if cfg.learner_resource:
            learner[cfg.learner_resource] = 0.001
        bundles = [*bundles, *[learner] * cfg.num_learners]
    return bundles


def check_capacity(cfg: TrainConfig, device: str, autoscaling: bool) -> None:
    """Fail with a clear message instead of waiting forever for resources the cluster lacks. On a
    cluster that may autoscale, ask the autoscaler for them and wait up to --wait-for-resources-s."""
    bundles = _needed_bundles(cfg, device)
    need_cpu = sum(b.get("CPU", 0) for b in bundles)
    if autoscaling and ray.cluster_resources().get("CPU", 0) + 1e-9 < need_cpu:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=bundles)
        print(f"waiting up to {cfg.wait_for_resources_s:g}s for the cluster to offer {need_cpu:g} CPUs "
              f"(has {ray.cluster_resources().get('CPU', 0):g})", flush=True)
        deadline = time.time() + cfg.wait_for_resources_s
        while time.time() < deadline and ray.cluster_resources().get("CPU", 0) + 1e-9 < need_cpu:
            time.sleep(5)
    total = ray.cluster_resources()
    if total.get("CPU", 0) + 1e-9 < need_cpu:
        raise RuntimeError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs but {cfg.ppo_num_workers} runners "
                           f"x {cfg.runner_num_cpus:g} CPU + the learner need {need_cpu:g}; lower --ppo-num-workers "
                           "or --runner-num-cpus, or add nodes")
    if cfg.learner_resource and total.get(cfg.learner_resource, 0) <= 0:
        raise RuntimeError(f"--learner-resource {cfg.learner_resource!r}: no node of the cluster offers it")
    if device == "cuda" and total.get("GPU", 0) < 1:
        raise RuntimeError("--learner-device cuda: the Ray cluster has no GPU")
    check_gpus(cfg, bundles, total)


def check_gpus(cfg: TrainConfig, bundles: list[dict], total: dict) -> None:
    """--runner-device cuda on a cluster without GPUs, or GPU shares that add up to more than it has:
    a settings error (exit 2), before any actor starts."""
    gpus, need = total.get("GPU", 0), sum(b.get("GPU", 0) for b in bundles)
    if cfg.runner_device == "cuda" and gpus <= 0:
        raise ConfigError("--runner-device", "cuda: the Ray cluster has no GPU (runner inference on CUDA needs one; "
                                             "use --runner-device cpu)")
    if need > gpus + 1e-9:
        raise ConfigError("--runner-num-gpus", f"the runners ({cfg.ppo_num_workers} x {cfg.runner_num_gpus:g} GPU) and "
                                               f"the learners ({cfg.num_learners} x {cfg.learner_num_gpus:g} GPU on CUDA) "
                                               f"need {need:g} GPUs; the Ray cluster has {gpus:g} (lower "
                                               "--runner-num-gpus or --learner-num-gpus)")

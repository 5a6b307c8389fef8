"""Learner actor: wraps the Ray-free PPOLearner on CPU or CUDA. It also encodes checkpoints, so
the driver only writes their bytes (torch loads inside the actor, never in the driver)."""

from __future__ import annotations

import time

import ray

from ray_app.placement import CoreShare, SamplingWatch, node_cores, set_torch_threads
from ray_app.runner import fetch_states
from training.config import TrainConfig
from training.faults import maybe_fail, parse_faults


class Learner:
    """Created before the runners know the env's spaces, so that its process starts (and imports
    torch) while they build their envs; ``build`` then makes the policy and optimizer. Calls from
    the driver run in the order sent, so everything sent after ``build`` sees them."""

    def __init__(self, cfg_dict: dict, device: str, incarnation: int = 0, rank: int = 0, world: int = 1):
        self.threads = set_torch_threads()
        self.cfg = TrainConfig.from_dict(cfg_dict)
        self.device = device
        self.core = None  # a training.learner.PPOLearner once built
        self.faults = parse_faults(self.cfg.fault_inject)
        self.incarnation = incarnation
        self.calls = 0
        self.threads_while_sampling = self.threads
        # data-parallel learners (--num-learners, ray_app/learner_group.py): this one's place
        self.rank, self.world, self.data_parallel = rank, world, None

    def rendezvous_address(self) -> tuple[str, int]:
        """Learner 0's: where the group's TCP store will listen (this node's address, a free port)."""
        from training.distributed import free_port

        host = ray.util.get_node_ip_address()
        return host, free_port(host)

    def join_group(self, address: tuple[str, int]) -> None:
        """Join the data-parallel group (blocks until every learner has); before ``build``."""
        from training.distributed import DataParallel

        self.data_parallel = DataParallel.join(self.rank, self.world, address[0], int(address[1]), self.device,
                                               timeout_s=self.cfg.learner_timeout_s or 600.0)

    def build(self, env_info) -> None:
        from training.learner import PPOLearner

        self.core = PPOLearner(self.cfg, env_info, device=self.device, data_parallel=self.data_parallel)

    def share_cores(self, runner_cpus_here: float) -> int:
        """Runners holding ``runner_cpus_here`` CPUs run on this learner's node. Where Ray's CPUs
        there outnumber the cores (the embedded driver sizes a laptop's Ray to fit every actor),
        overlapped rounds keep to the cores the runners leave free while they sample."""
        free = int(node_cores() - runner_cpus_here)
        self.threads_while_sampling = max(1, min(self.threads, free))
        return self.threads_while_sampling

    def policy_spec(self) -> dict:
        return self.core.policy_spec

    def get_weights(self) -> dict:
        return self.core.weights()

    @ray.method(num_returns=2)
    def learn(self, *rollouts, off_policy: bool = False, sampling: list | None = None,
              columns: tuple[int, int] | None = None, publish: bool = True):
        """Rollouts arrive resolved (zero-copy views of the object store). Returns (losses, new
        weights); the weights become one object that every runner reads. ``sampling`` (overlapped
        mode): references to the rollouts the runners are collecting meanwhile; until they are
        ready the learner uses only the threads ``share_cores`` left it. ``columns`` and ``publish``
        (data-parallel learners): this learner's envs of the rollouts given, and whether it returns
        the weights (learner 0 only; the others return None)."""
        self.calls += 1
        maybe_fail(self.faults, "learner", 0, self.calls, self.incarnation)
        watch = SamplingWatch(sampling) if sampling and self.threads_while_sampling < self.threads else None
        share = CoreShare(watch, self.threads_while_sampling, self.threads, module=self.core.policy)
        start = time.perf_counter()
        try:
            metrics = self.core.learn(list(rollouts), off_policy=off_policy, before_minibatch=share.poll,
                                      **({} if columns is None else {"columns": columns}))
        finally:
            share.release()
            if watch is not None:
                watch.close()
        # the update itself, apart from Ray's share of the round (arguments in, weights out)
        metrics["learner_update_s"] = time.perf_counter() - start
        metrics["learner_shared_s"] = share.narrowed_s
        return metrics, (self.core.weights() if publish else None)

    def checkpoint(self, header: dict, runner_state_refs: list | None):
        """The checkpoint file's bytes (a uint8 array, see ``encode_checkpoint``): ``header``
        (window, counters, config) plus this learner's state and the runners' states, fetched here
        from their references."""
        from training.checkpoints import encode_checkpoint

        return encode_checkpoint({**header, "learner": self.core.state_dict(),
                                  "runners": fetch_states(runner_state_refs)})

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


RemoteLearner = ray.remote(Learner)

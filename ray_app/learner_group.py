"""Data-parallel learners (``--num-learners N``): N learner actors that look like one to the driver.

Each learner takes 1/N of every round's env columns: learner j trains on envs [j * E/N, (j + 1) * E/N)
of the run's E envs, taken from the rollouts of the runners that hold them (runner i holds envs
[i * k, (i + 1) * k)), so a runner's rollout may be split between two learners. Their gradients are
summed with ``torch.distributed`` (training/distributed.py): gloo on CPU, NCCL on CUDA (one GPU per
learner). Learner 0 hosts the rendezvous (its node's address and a free port, passed to the others
through Ray), publishes the one weights object the runners read, and encodes checkpoints; a resume
loads the same state into every learner. ``LearnerGroup`` has the methods the driver calls on a
learner actor, each with ``.remote``, so the driver's loop is the same for one learner or N.
"""

from __future__ import annotations

import ray

from ray_app.learner import RemoteLearner
from ray_app.placement import learner_options
from training.config import TrainConfig


class _Method:
    """``group.name.remote(...)``, as on an actor handle."""

    def __init__(self, fn):
        self.remote = fn


def learner_shares(cfg: TrainConfig, learners: int) -> list[tuple[int, int, tuple[int, int]]]:
    """For each learner: (first runner, last runner + 1, its envs relative to the first runner's
    first env). Learner j's envs are [j * s, (j + 1) * s) with s = E / N."""
    k, s = cfg.envs_per_worker, cfg.ppo_num_envs // learners
    out = []
    for j in range(learners):
        lo, hi = j * s, (j + 1) * s
        first, last = lo // k, (hi - 1) // k + 1
        out.append((first, last, (lo - first * k, hi - first * k)))
    return out


class LearnerGroup:
    def __init__(self, cfg: TrainConfig, device: str, incarnation: int = 0):
        self.cfg, self.n = cfg, cfg.num_learners
        opts, cfg_dict = learner_options(cfg, device), cfg.to_dict()
        self.actors = [RemoteLearner.options(**opts).remote(cfg_dict, device, incarnation, rank=r, world=self.n)
                       for r in range(self.n)]
        self.shares = learner_shares(cfg, self.n)
        first = self.actors[0]
        self.build = _Method(self._build)
        self.learn = _Method(self._learn)
        self.load_state_dict = _Method(lambda state: [a.load_state_dict.remote(state) for a in self.actors])
        self.share_cores = _Method(lambda cpus: [a.share_cores.remote(cpus) for a in self.actors])
        # learner 0 speaks for the group: every learner holds the same weights and state
        for name in ("policy_spec", "get_weights", "checkpoint", "node_id"):
            setattr(self, name, getattr(first, name))

    def _build(self, env_info) -> list:
        """Join the group (learner 0's address reaches the others as an object reference, so the
        driver does not wait here), then build every learner's policy. Returns every call's
        reference: ``ray.get`` of the list is ready when the group is."""
        address = self.actors[0].rendezvous_address.remote()
        joins = [a.join_group.remote(address) for a in self.actors]
        return joins + [a.build.remote(env_info) for a in self.actors]

    def _learn(self, *rollouts, off_policy: bool = False, sampling: list | None = None):
        """-> (every learner's losses reference, as a list; learner 0's weights reference)."""
        metrics, weights = [], None
        for j, (actor, (first, last, columns)) in enumerate(zip(self.actors, self.shares)):
            m, w = actor.learn.remote(*rollouts[first:last], off_policy=off_policy, sampling=sampling,
                                      columns=columns, publish=j == 0)
            metrics.append(m)
            weights = w if j == 0 else weights
        return metrics, weights

    def kill(self) -> None:
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass


def start_learners(cfg: TrainConfig, device: str, incarnation: int):
    """One learner actor (the single-learner path, unchanged), or a ``LearnerGroup`` of N."""
    if cfg.num_learners == 1:
        return RemoteLearner.options(**learner_options(cfg, device)).remote(cfg.to_dict(), device, incarnation)
    return LearnerGroup(cfg, device, incarnation)


def kill_learners(learner) -> None:
    if isinstance(learner, LearnerGroup):
        learner.kill()
    else:
        ray.kill(learner)

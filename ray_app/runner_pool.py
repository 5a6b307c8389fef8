"""The env runners of a run, with replacement of runners whose process died.

A runner that dies mid-rollout (killed, OOM, node lost: Ray raises a ``RayActorError``) is
replaced by a new actor (placed on any node with room), seeded from (seed, index, incarnation),
and the lost rollout is collected again from it, so no step is counted twice or lost. A slot whose
runner dies more than ``max_runner_restarts_per_window`` times in one window fails the run.
"""

from __future__ import annotations

import sys
import time

import ray
from ray.exceptions import RayActorError

from ray_app.placement import runner_options, runner_placement_group
from ray_app.runner import RemoteEnvRunner
from training.config import TrainConfig
from training.envs.env_spec import env_build_error


class RunnerKeepsDying(RuntimeError):
    pass


class RunnerHung(RuntimeError):
    """A runner gave no rollout within ``--runner-timeout-s``."""


class RolloutsLost(RuntimeError):
    """A round's rollouts were lost from the object store (their node died after sampling)."""


class RunnerPool:
    def __init__(self, cfg: TrainConfig, previous_incarnations: list[int] | None = None):
        """``previous_incarnations``: the slots' incarnations in an earlier pool of this run (after a
        learner loss): the new processes count as new incarnations."""
        self.cfg = cfg
        self.cfg_dict = cfg.to_dict()
        self.incarnations = ([i + 1 for i in previous_incarnations] if previous_incarnations
                             else [0] * cfg.ppo_num_workers)
        self.restarts_total = 0
        self.restarts_this_window = [0] * cfg.ppo_num_workers
        self.placement_group = runner_placement_group(cfg)
        self.runners = [self._start(i) for i in range(cfg.ppo_num_workers)]
        # A runner that cannot even build its env is a configuration error, not a lost process:
        # surface it now instead of restarting it.
        try:
            infos = ray.get([r.env_info.remote() for r in self.runners], timeout=cfg.wait_for_resources_s)
        except ray.exceptions.GetTimeoutError:
            self.shutdown()
            raise RuntimeError(f"the env runners could not be placed within {cfg.wait_for_resources_s:g}s "
                               f"(each needs {cfg.runner_num_cpus:g} CPU; --runner-placement {cfg.runner_placement}); "
                               "lower --ppo-num-workers or add nodes") from None
        except ray.exceptions.RayTaskError as e:  # the env could not be built (EnvRunner.env_info)
            self.shutdown()
            raise env_build_error(cfg.env, cfg.env_kwargs, e.cause if e.cause is not None else e) from None
        self.env_info = infos[0]  # what the learner builds the policy from

    def _start(self, index: int):
        return RemoteEnvRunner.options(**runner_options(self.cfg, index, self.placement_group)).remote(self.cfg_dict, index, self.incarnations[index])

    def _replace(self, index: int, error: Exception) -> None:
        self.restarts_total += 1
        self.restarts_this_window[index] += 1
        if self.restarts_this_window[index] > self.cfg.max_runner_restarts_per_window:
            raise RunnerKeepsDying(
                f"env runner {index} died {self.restarts_this_window[index]} times in one window "
                f"(limit --max-runner-restarts-per-window {self.cfg.max_runner_restarts_per_window}); "
                f"last error: {type(error).__name__}")
        print(f"env runner {index} lost ({type(error).__name__}); starting a replacement", file=sys.stderr, flush=True)
        try:
            ray.kill(self.runners[index])
        except Exception:
            pass  # already gone
        self.incarnations[index] += 1
        self.runners[index] = self._start(index)
        # started and its env built before the clock of --runner-timeout-s runs: a process start
        # (torch's import) can take longer than a rollout
        ray.get(self.runners[index].env_info.remote(), timeout=self.cfg.wait_for_resources_s)

    def submit(self, weights, version: int, policy_spec: dict | None, teach: bool | str = False,
               steps: int | None = None) -> dict:
        """Start one rollout of ``steps`` vector steps (default: the configured length) on every
        runner; returns the in-flight round for ``gather``."""
        args = (weights, version, policy_spec, teach, steps)
        calls = {i: r.collect.remote(*args) for i, r in enumerate(self.runners)}
        return dict(calls=calls, args=args)

    @staticmethod
    def summary_refs(round_: dict) -> list:
        """References to a submitted round's small summaries: they exist once the rollouts do."""
        return [summary for _, summary in round_["calls"].values()]

    def gather(self, round_: dict, give_up=lambda: False) -> list[tuple]:
        """Wait for a submitted round: [(batch_ref, summary), ...] in runner order. A runner lost
        meanwhile is replaced and its rollout collected again with the same weights, unless
        ``give_up()`` (the run is being stopped: the loss is most likely the stop itself). A runner
        with no rollout after ``--runner-timeout-s`` is taken for hung and replaced the same way."""
        pending = dict(round_["calls"])
        started = dict.fromkeys(pending, time.monotonic())
        timeout = self.cfg.runner_timeout_s or None
        results: list = [None] * len(self.runners)
        while pending:
            by_ref = {summary: i for i, (_, summary) in pending.items()}
            wait_s = None if timeout is None else max(0.0, min(started.values()) + timeout - time.monotonic())
            ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=wait_s)
            for ref in ready:
                i = by_ref[ref]
                try:
                    results[i] = (pending.pop(i)[0], ray.get(ref))
                    del started[i]
                except RayActorError as e:
                    if give_up():
                        raise
                    self._recollect(i, e, round_, pending, started)
            for i in [i for i, t in started.items() if timeout is not None and time.monotonic() - t >= timeout]:
                self._recollect(i, RunnerHung(f"no rollout within --runner-timeout-s {timeout:g}"), round_, pending,
                                started)
        return results

    def _recollect(self, index: int, error: Exception, round_: dict, pending: dict, started: dict) -> None:
        self._replace(index, error)
        pending[index] = self.runners[index].collect.remote(*round_["args"])
        started[index] = time.monotonic()

    def recollect_lost(self, round_: dict, outs: list[tuple]) -> list[tuple]:
        """``outs`` (a gathered round) after rollouts were lost with their node (an object-lost
        error when the learner fetched them): the runners that died with it are replaced and their
        rollouts collected again with the round's weights; the others' rollouts stand. Raises
        ``RolloutsLost`` when no runner is gone (nothing to collect again)."""
        alive = []
        for runner in self.runners:
            try:
                ray.get(runner.node_id.remote(), timeout=60)
                alive.append(True)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                alive.append(False)
        if all(alive):
            raise RolloutsLost("rollouts were lost, yet every env runner is alive")
        redo = [i for i, ok in enumerate(alive) if not ok]
        pending, started = {}, {}
        for i in redo:
            self._recollect(i, RolloutsLost("its node died with the round's rollouts"), round_, pending, started)
        fresh = self.gather({"calls": pending, "args": round_["args"]})
        return [fresh[i] if i in redo else out for i, out in enumerate(outs)]

    def window_closed(self) -> None:
        self.restarts_this_window = [0] * len(self.runners)

    def node_ids(self) -> list[str]:
        return ray.get([r.node_id.remote() for r in self.runners])

    def state_refs(self) -> list:
        """References to every runner's state for a checkpoint; whoever encodes the checkpoint
        fetches them (``fetch_states``), so the states never pass through the driver."""
        return [r.state_dict.remote() for r in self.runners]

    def load_state_dicts(self, states: list[dict]) -> bool:
        """Restore every runner; True when all envs resumed their exact trajectories."""
        if len(states) != len(self.runners):
            return False
        return all(ray.get([r.load_state_dict.remote(s) for r, s in zip(self.runners, states)]))

    def shutdown(self) -> None:
        for r in self.runners:
            try:
                ray.kill(r)
            except Exception:
                pass
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)

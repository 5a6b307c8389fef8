"""Killing parts of a running job on purpose, to check it survives: the test-only node fault
(``--fault-inject node=K@N``) and the chaos run (``bench/chaos.py``).

Everything here acts on a local multi-node cluster (``ray.cluster_utils.Cluster``), whose nodes
are processes of this machine: a node dies when its raylet is killed, as when a VM disappears.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import ray


def kill_node_of(actors: list, timeout_s: float = 60.0) -> str:
    """Kill the node hosting the first of ``actors`` that is not on the driver's node (its raylet,
    the parent of the actor's worker process) and wait until Ray marks the node dead; returns its
    node id."""
    here = ray.get_runtime_context().get_node_id()
    victim = next((a for a in actors if ray.get(a.node_id.remote()) != here), None)
    if victim is None:
        raise RuntimeError("every actor is on the driver's node: no node to kill")
    node_id = ray.get(victim.node_id.remote())
    os.kill(ray.get(victim.parent_pid.remote()), signal.SIGKILL)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
            return node_id
        time.sleep(0.2)
    raise TimeoutError(f"node {node_id} still alive {timeout_s:g}s after its raylet was killed")


class ChaosMonkey:
    """While a run of ``windows`` windows trains on ``cluster``, kill its parts at random times:
    ``per_kind`` times each of an env runner's process, the learner's process and a worker node (a
    fresh worker then joins, as an autoscaler would bring one), in a random order. Each fault fires
    once the run has written a random number of windows (distinct, in 1 .. windows - 2), after a
    random further delay of up to ``max_delay_s`` so it lands anywhere in a round: every planned
    fault is injected, whatever the machine's speed. ``injected`` counts what was killed, ``events``
    says when (seconds since start, windows written, kind). ``run`` must be called from the main
    thread (Ray's ``Cluster.add_node`` installs a signal handler)."""

    KINDS = ("runner", "learner", "node")

    def __init__(self, cluster, seed: int, windows: int, worker_args: dict, per_kind: int = 2,
                 max_delay_s: float = 2.0, kinds=KINDS):
        self.cluster, self.worker_args = cluster, worker_args
        self.rng = random.Random(seed)
        kinds_planned = [kind for kind in kinds for _ in range(per_kind)]
        if len(kinds_planned) > windows - 2:
            raise ValueError(f"{len(kinds_planned)} faults need a run of at least {len(kinds_planned) + 2} windows")
        self.rng.shuffle(kinds_planned)
        at = sorted(self.rng.sample(range(1, windows - 1), len(kinds_planned)))
        self.plan = [(w, self.rng.uniform(0.0, max_delay_s), kind) for w, kind in zip(at, kinds_planned)]
        self.injected = dict.fromkeys(kinds, 0)
        self.events: list[tuple[float, int, str]] = []

    def run(self, done: threading.Event, windows_written) -> None:
        """Inject the plan's faults, each once ``windows_written()`` reaches its window, until the
        plan is spent or ``done`` is set (the run ended)."""
        t0, plan = time.time(), list(self.plan)
        while plan and not done.wait(0.2):
            at, delay, kind = plan[0]
            written = windows_written()
            if written < at or done.wait(delay):
                continue
            if getattr(self, f"_kill_{kind}")():  # nothing to kill (mid-replacement): try again shortly
                self.injected[kind] += 1
                self.events.append((round(time.time() - t0, 1), written, kind))
                plan.pop(0)

    def _kill_actor(self, class_name: str) -> bool:
        from ray.util.state import list_actors

        alive = [a for a in list_actors(filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
                                        detail=True) if a.pid]
        if not alive:
            return False
        try:
            os.kill(self.rng.choice(alive).pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def _kill_runner(self) -> bool:
        return self._kill_actor("EnvRunner")

    def _kill_learner(self) -> bool:
        return self._kill_actor("Learner")

    def _kill_node(self) -> bool:
        workers = [n for n in self.cluster.list_all_nodes() if n is not self.cluster.head_node]
        if not workers:
            return False
        self.cluster.remove_node(self.rng.choice(workers))
        self.cluster.add_node(**self.worker_args)
        return True

"""The embedded single-node Ray of a local run, without the head services such a run never uses.

``ray.init`` always starts, beside GCS, the raylet and its two agents, an autoscaler monitor and
an API server. In an embedded node neither has work: there is no cluster config to autoscale, and
with ``include_dashboard=False`` the API server loads only Ray's usage-stats reporter (no
dashboard, no job or state API). ``ray.init`` has no switch for them, so they are stopped once the
node is up, which saves their memory (docs/BENCHMARKS.md, "Private torch and Ray APIs"). The log
monitor, which streams the actors' output to this terminal, and everything the raylet needs stay.

Only Ray's private node object can stop one of its processes. Where this Ray's differs (an
attribute gone, a changed signature), nothing is stopped and the run goes on as with plain
``ray.init``, only with those two processes.
"""

from __future__ import annotations

import logging

import ray

log = logging.getLogger(__name__)

# Node.all_processes keys (ray._private.ray_constants.PROCESS_TYPE_MONITOR / _DASHBOARD).
UNUSED_HEAD_SERVICES = ("monitor", "dashboard")


def start_local_ray(num_cpus: int) -> list[str]:
    """Start an embedded Ray with ``num_cpus`` CPUs and stop its unused head services. Returns
    the services stopped."""
    # address="local": without it ray.init() joins whatever /tmp/ray/ray_current_cluster names
    # (another user's `ray start`, or a stale file left by a killed head) instead of embedding.
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    return stop_unused_head_services()


def stop_unused_head_services() -> list[str]:
    """Stop the autoscaler monitor and the API server of the node this process started. Only ever
    the node ``ray.init`` started here (the one ``ray.shutdown`` will stop), never a joined one.
    Returns the services stopped: none where Ray's private node API is not what this expects."""
    try:
        node = ray._private.worker._global_node
        if node is None or not node.head:  # not started, or joined a cluster: its processes are not ours
            return []
        present = [kind for kind in UNUSED_HEAD_SERVICES if kind in node.all_processes]
        kill = node._kill_process_type
    except Exception as e:  # noqa: BLE001 (any change in Ray's private node: keep everything running)
        log.debug("not stopping Ray's unused head services: %r", e)
        return []
    stopped = []
    for kind in present:
        try:
            # Node's own stop for one process type (it also drops it from the set ray.shutdown()
            # stops later). SIGKILL: on SIGTERM the monitor reports itself failed to the driver.
            kill(kind, allow_graceful=False, check_alive=False, wait=True)
        except Exception as e:  # noqa: BLE001
            log.debug("not stopping Ray's %s: %r", kind, e)
            break
        stopped.append(kind)
    return stopped

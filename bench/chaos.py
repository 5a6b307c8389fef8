"""Chaos run: train on a local three-node Ray cluster (a head holding the learner, two workers)
while ``ray_app.chaos.ChaosMonkey`` kills env runners, the learner and worker nodes at random
times; then check that the run completed with every window exactly once, env steps continuous,
and a loadable checkpoint for every window. Prints a table of what was injected and survived.

    .venv/bin/python bench/chaos.py --total-env-steps 81920 --per-kind 3 --seed 1

tests/test_chaos.py runs it at small scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORKER = {"num_cpus": 2, "object_store_memory": 150 * 1024**2}


def run_chaos(run_root: str, total_env_steps: int, per_kind: int, seed: int) -> dict:
    """One chaos run; returns its report (``check`` lists every invariant that failed: none, if survived)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.cluster_utils import Cluster

    from ray_app.chaos import ChaosMonkey
    from ray_app.driver import train
    from training.config import config_from_args
    from training.checkpoints import CheckpointError, load_checkpoint
    from training.run_store import RunStore

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "resources": {"learner": 1},
                                                            "include_dashboard": True})
    for _ in range(2):
        cluster.add_node(**WORKER)
    cluster.wait_for_nodes()
    cfg = config_from_args(dict(
        env="gym:CartPole-v1", total_env_steps=total_env_steps, window_env_steps=2048, ppo_num_envs=4,
        ppo_num_workers=2, ppo_rollout_steps=256, ppo_update_epochs=2, ppo_num_minibatches=2, keep_checkpoints=0,
        run_root=run_root, run_id=f"chaos-{seed}", address=cluster.address, learner_resource="learner",
        max_learner_restarts=100, max_runner_restarts_per_window=10, seed=seed))
    windows = total_env_steps // 2048
    monkey = ChaosMonkey(cluster, seed, windows, WORKER, per_kind=per_kind)
    rows_path = Path(run_root) / cfg.run_id / "metrics" / "windows.jsonl"
    started, done, result = time.time(), threading.Event(), {}

    def drive():  # the run in a thread: the monkey needs the main thread to add nodes
        try:
            result["meta"] = train(cfg, exit_on_second_signal=False)
        except Exception as e:  # noqa: BLE001 - reported as a failed check below
            result["error"] = e
        finally:
            done.set()

    try:
        ray.init(address=cluster.address)  # the monkey's state queries; the driver reuses this connection
        driver = threading.Thread(target=drive, name="driver")
        driver.start()
        monkey.run(done, lambda: len(rows_path.read_text().splitlines()) if rows_path.exists() else 0)
        driver.join()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    if "error" in result:
        raise result["error"]
    meta = result["meta"]
    store = RunStore.open(Path(run_root) / cfg.run_id)
    rows = store.read_windows()
    check = []
    if meta["status"] != "completed":
        check.append(f"status {meta['status']}: {meta.get('error')}")
    if [r["window_id"] for r in rows] != list(range(windows)):
        check.append(f"window ids {[r['window_id'] for r in rows]}")
    if [r["env_steps_start"] for r in rows] != [2048 * i for i in range(windows)] or \
            meta["env_steps_total"] != total_env_steps:
        check.append("env steps not continuous")
    loadable = set()
    for path in store.list_checkpoints():
        try:
            loadable.add(load_checkpoint(path)["window_id"])
        except CheckpointError as e:
            check.append(str(e))
    if loadable != set(range(windows)):
        check.append(f"checkpoints of windows {sorted(set(range(windows)) - loadable)} missing")
    return dict(injected=monkey.injected, planned=len(monkey.plan), events=monkey.events,
                runner_restarts=meta.get("runner_restarts"), learner_restarts=meta.get("learner_restarts"),
                windows=len(rows), env_steps_total=meta.get("env_steps_total"),
                steps_lost=total_env_steps - int(meta.get("env_steps_total") or 0), wall_s=time.time() - started,
                check=check)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-env-steps", type=int, default=81920)
    parser.add_argument("--per-kind", type=int, default=3, help="kills of each kind: runner, learner, node")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run-root", default=None)
    args = parser.parse_args()
    root = args.run_root or tempfile.mkdtemp(prefix="chaos-")
    report = run_chaos(root, args.total_env_steps, args.per_kind, args.seed)
    injected = report["injected"]
    print("| faults injected (runner / learner / node) | survived | runner restarts | learner replays | windows "
          "| env steps | steps lost | wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {injected['runner']} / {injected['learner']} / {injected['node']} | "
          f"{'all' if not report['check'] else 'NO: ' + '; '.join(report['check'])} | {report['runner_restarts']} | "
          f"{report['learner_restarts']} | {report['windows']} | {report['env_steps_total']:,} | "
          f"{report['steps_lost']} | {report['wall_s']:.0f} |")
    print("events (s since start, windows written, kind):", json.dumps(report["events"]))
    return 0 if not report["check"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Parent side of bench/throughput.py: one fresh subprocess per configuration, with its peak memory.

Every configuration runs in its own Python process (``bench/_bench_child.py``), so no state (Ray,
torch thread pools, imported modules, allocator arenas) leaks from one measurement into the next.
While it runs, a thread here samples every 0.2 s the memory of that process and all its
descendants (an embedded Ray's gcs_server, raylet and worker processes descend from the driver),
two ways: summed RSS, where a shared page (Ray's object store, torch's libraries) counts once per
process that maps it, and summed PSS (proportional set size, /proc/PID/smaps_rollup), where it is
split among the processes sharing it, so the sum is the physical memory the tree takes.

PSS is read every ``PSS_EVERY`` samples only: reading it walks every page table of every process
(smaps_rollup) and holds their memory-map locks meanwhile; every 0.2 s over a Ray tree of 8
processes, that cost this trainer ~25% of its throughput on 2 cores (9.6k against 12.3k sps,
ours-async-1, AMD host, 2026-12-03) and PuffeRL's single process nothing. RSS (statm) is O(1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "bench", "_bench_child.py")
SAMPLE_S = 0.2
PSS_EVERY = 10  # samples: PSS every 2 s


def tree_memory(proc: psutil.Process, with_pss: bool = True) -> tuple[int, int, dict[int, float]]:
    """Summed RSS and summed PSS (bytes; 0 unless ``with_pss``) of proc and its live descendants,
    and {pid: create_time}."""
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0, 0, {}
    rss = pss = 0
    pids = {}
    for p in procs:
        try:
            info = p.memory_full_info() if with_pss else p.memory_info()
            rss, pss = rss + info.rss, pss + (info.pss if with_pss else 0)
            pids[p.pid] = p.create_time()
        except psutil.Error:
            pass  # exited between listing and reading
    return rss, pss, pids


class MemorySampler(threading.Thread):
    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self.seen: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        samples = 0
        while not self._halt.is_set():
            rss, pss, pids = tree_memory(self.proc, with_pss=samples % PSS_EVERY == 0)
            samples += 1
            if rss > self.peak:
                self.peak, self.peak_procs = rss, len(pids)
            self.peak_pss = max(self.peak_pss, pss)
            self.seen.update(pids)
            self._halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _still_ours(pid: int, created: float) -> psutil.Process | None:
    try:
        p = psutil.Process(pid)
        return p if abs(p.create_time() - created) < 0.01 else None  # not a reused pid
    except psutil.Error:
        return None


def _kill_leftovers(seen: dict[int, float], own_pid: int) -> int:
    """Terminate processes that descended from our child and outlived it (e.g. a Ray worker after a
    crash). Only processes seen in our child's tree are touched, each by its id."""
    left = {pid: c for pid, c in seen.items() if pid != own_pid and _still_ours(pid, c)}
    _signal_ours(left, "terminate")
    if left:
        time.sleep(1.0)
        _signal_ours(left, "kill")
    return len(left)


def _signal_ours(procs: dict[int, float], method: str) -> None:
    """psutil's terminate/kill on each (pid, create time) that is still the process we saw."""
    for pid, created in procs.items():
        p = _still_ours(pid, created)
        if p is not None:
            try:
                getattr(p, method)()
            except psutil.Error:
                pass


def run_child(spec: dict, timeout_s: float, log_path: str | None = None, echo: bool = False) -> dict:
    """Run one configuration; returns the child's result dict plus ``peak_rss_mib``,
    ``peak_pss_mib``, ``process_wall_s`` and, on failure, ``error``."""
    with tempfile.TemporaryDirectory(prefix="bench_tp_") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "result.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)  # never join someone else's cluster
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        env.setdefault("WANDB_MODE", "disabled")
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        log = open(log_path, "w") if log_path else subprocess.DEVNULL
        if echo:
            log = None  # inherit: show the child's output live
        start = time.time()
        proc = subprocess.Popen([sys.executable, CHILD, spec_path, out_path], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                                start_new_session=True)
        sampler = MemorySampler(proc.pid)
        sampler.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.kill(proc.pid, signal.SIGINT)  # let it stop cleanly (shuts its Ray down)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            sampler.stop()
            _kill_leftovers(sampler.seen, proc.pid)
            raise
        wall = time.time() - start
        sampler.stop()
        leftovers = _kill_leftovers(sampler.seen, proc.pid)
        if log not in (None, subprocess.DEVNULL):
            log.close()
        result: dict = {}
        if os.path.exists(out_path):
            with open(out_path) as f:
                result = json.load(f)
        if not result:
            result["error"] = f"no result written (exit code {proc.returncode}" + (", timed out)" if timed_out else ")")
            if log_path:
                result["error"] += f"; log: {log_path}"
        elif proc.returncode != 0 and "error" not in result:
            result["error"] = f"exit code {proc.returncode}" + (" (timed out)" if timed_out else "")
            if log_path:
                result["error"] += f"; log: {log_path}"
        elif timed_out:
            result.setdefault("notes", []).append(f"hit the {timeout_s:.0f} s process limit")
        result.update(peak_rss_mib=sampler.peak / 2**20, peak_pss_mib=sampler.peak_pss / 2**20,
                      peak_processes=sampler.peak_procs,
                      process_wall_s=wall, leftover_processes_killed=leftovers)
        return result

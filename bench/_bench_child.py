"""Child side of bench/throughput.py: run one configuration and write its result as JSON.

    python bench/_bench_child.py SPEC.json RESULT.json

SPEC["kind"] picks the runner: ours, puffer, rllib, env_limit, learner_limit. Each runner returns
a dict; this module adds ``child_wall_s`` (seconds from interpreter start-up to the end) and, on an
exception, ``error`` with the exception text (the traceback goes to stderr).
"""

import os
import sys
import time

_T0 = time.time()
# Before anything can import Ray: keep Ray on loopback, never join another cluster.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import traceback  # noqa: E402


def run(spec: dict) -> dict:
    kind = spec["kind"]
    if spec.get("torch_threads"):  # single-process baselines; 0 keeps torch's default (one per core)
        import torch

        torch.set_num_threads(int(spec["torch_threads"]))
    if kind in ("ours", "env_limit", "learner_limit"):
        from bench import _bench_ours as mod
    elif kind == "puffer":
        from bench import _bench_puffer as mod
    elif kind == "rllib":
        from bench import _bench_rllib as mod
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return getattr(mod, "run_" + kind)(spec, _T0)


def main() -> int:
    spec_path, out_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        result = run(spec)
        rc = 0
    except BaseException as e:  # KeyboardInterrupt included: report what happened
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"[:2000]}
        rc = 1
    result["child_wall_s"] = time.time() - _T0
    with open(out_path, "w") as f:
        json.dump(result, f, default=float)
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Continuous control with every setting at its default: MuJoCo tasks beside CleanRL's published PPO.

    .venv/bin/python bench/continuous.py                                  # 2 tasks x 3 seeds x 1M steps
    .venv/bin/python bench/continuous.py --envs Hopper-v5 --seeds 0 --steps 200000 --parallel 1

Each run is the plain command a user would type, `prospector train --env gym:<id> --seed S
--total-env-steps N` (plus a window size for the curve), in a fresh process with its own embedded
Ray; ``--parallel`` runs that many at once (the figures then share the cores: wall times say so).
The table gives, per task, every seed's final return (the mean episode return of the last window,
``--window-env-steps`` steps), their mean, and the ratio to CleanRL's published
``ppo_continuous_action.py`` mean at the same budget. Needs `pip install "mujoco==3.3.7"` (the
test extra installs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# CleanRL's ppo_continuous_action.py, 1M steps, mean +- std over seeds of the average episodic
# return (openrlbenchmark, tag pr-424, MuJoCo v4; docs/rl-algorithms/ppo.md). v5 changed little for
# these two tasks (Gymnasium's v5 notes: fixed bugs, same rewards and limits).
CLEANRL_1M = {"HalfCheetah-v5": (1442.64, 46.03), "Hopper-v5": (2382.86, 271.74)}


def run_one(env_id: str, seed: int, args) -> dict:
    run_id = f"{env_id}_s{seed}"
    cmd = [sys.executable, "-m", "ray_app", "train", "--env", f"gym:{env_id}", "--seed", str(seed),
           "--total-env-steps", str(args.steps), "--window-env-steps", str(args.window_env_steps),
           "--run-root", args.run_root, "--run-id", run_id]
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    start = time.time()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.time() - start
    rows_path = Path(args.run_root) / run_id / "metrics" / "windows.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()] if rows_path.exists() else []
    if res.returncode != 0 or not rows:
        raise RuntimeError(f"{run_id} failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    curve = [(r["env_steps_total"], r.get("return_mean")) for r in rows]
    return dict(env=env_id, seed=seed, final=rows[-1].get("return_mean"), wall_s=wall, curve=curve,
                steps=rows[-1]["env_steps_total"])


def table(results: list[dict]) -> str:
    lines = ["| task | seeds: final return | mean | CleanRL (1M) | ratio | wall per run |",
             "|---|---|---:|---:|---:|---:|"]
    for env_id in dict.fromkeys(r["env"] for r in results):
        runs = [r for r in results if r["env"] == env_id]
        finals = [r["final"] for r in runs]
        mean = sum(finals) / len(finals)
        ref = CLEANRL_1M.get(env_id)
        ref_text = f"{ref[0]:,.0f} +- {ref[1]:,.0f}" if ref else "-"
        ratio = f"{mean / ref[0]:.2f}x" if ref else "-"
        walls = sum(r["wall_s"] for r in runs) / len(runs)
        lines.append(f"| {env_id} | {', '.join(f'{f:,.0f}' for f in finals)} | {mean:,.0f} | {ref_text} | "
                     f"{ratio} | {walls / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default="HalfCheetah-v5,Hopper-v5")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--window-env-steps", type=int, default=50_000)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--run-root", default="/tmp/bench_continuous")
    p.add_argument("--json", help="write every run's curve here")
    args = p.parse_args()
    jobs = [(e, int(s)) for s in args.seeds.split(",") for e in args.envs.split(",")]
    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(lambda job: run_one(*job, args), jobs))
    for r in results:
        print(f"{r['env']} seed {r['seed']}: final {r['final']:,.1f} after {r['steps']:,} steps, "
              f"{r['wall_s'] / 60:.1f} min; curve " + ", ".join(f"{s // 1000}k:{v:,.0f}" for s, v in r["curve"]))
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Atari from pixels: this trainer's throughput beside PuffeRL's on Breakout, one run, one table.

    .venv/bin/python bench/atari.py --steps 12288 --warmup-steps 4096 --repeats 2

Same env (``training.envs.atari:breakout``: ALE/Breakout-v5 through ale-py's native vector env,
grey 84x84, 4 frames stacked, 4 frames a decision, sticky actions, rewards clipped for learning),
same network (the Nature CNN with a 512-unit layer: this trainer's default policy for uint8 image
observations, ``pufferlib.models.Convolutional`` for PuffeRL), same batch (CleanRL's Atari preset,
the ``breakout`` plug-in's: 8 envs x 128 steps, 4 minibatches, 4 epochs, lr 2.5e-4, clip 0.1,
entropy 0.01), same machine, one after the other, each in a fresh process. This trainer runs as
``prospector train --env breakout`` does (embedded Ray, one runner, the learner, sync mode);
PuffeRL runs in one process over ``pufferlib.vector.Serial`` holding the one native env of 8
games (the same driving as bench/_bench_puffer.py: no torch.compile, float32, CPU, dashboard off).

Steady-state env steps per second: this trainer's from its windows after the first
(``--warmup-steps`` is the window size), PuffeRL's from its iterations after ``--warmup-steps``.
``--repeats N`` alternates N runs of each; on a shared host the best run of each is the one least
disturbed, and the table gives every run beside it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HP = dict(lr=2.5e-4, gamma=0.99, gae_lambda=0.95, clip=0.1, vf_clip=0.1, vf_coef=0.5, ent_coef=0.01,
          max_grad_norm=0.5)
NUM_ENVS, ROLLOUT, MINIBATCHES, EPOCHS = 8, 128, 4, 4


def run_ours(spec: dict) -> dict:
    from bench._bench_ours import _deadline, _read_windows
    from ray_app.driver import train
    from training.config import config_from_args

    flags = dict(env="breakout", total_env_steps=spec["steps"], window_env_steps=spec["warmup"], seed=spec["seed"],
                 run_root=spec["run_root"], run_id="ours", wandb_mode="disabled", policy=spec["policy"],
                 ppo_num_envs=NUM_ENVS, ppo_rollout_steps=ROLLOUT, ppo_num_minibatches=MINIBATCHES,
                 ppo_update_epochs=EPOCHS)
    cfg = config_from_args(flags)
    timer = _deadline(spec["max_seconds"])
    started = time.time()
    meta = train(cfg)
    timer.cancel()
    rows = [r for r in _read_windows(os.path.join(spec["run_root"], "ours", "metrics", "windows.jsonl"))
            if r.get("window_complete", True)]
    steady = [r for r in rows[1:] if r.get("sps")]
    steps = sum(r["env_steps_in_window"] for r in steady)
    secs = sum(r["env_steps_in_window"] / r["sps"] for r in steady)
    return dict(status=meta.get("status"), steady_sps=steps / secs if secs else None, steady_steps=steps,
                wall_s=time.time() - started, env_steps_total=rows[-1]["env_steps_end"] if rows else 0,
                score_mean=[r.get("score_mean") for r in rows], policy=cfg.policy, hidden=cfg.policy_hidden,
                learner_num_cpus=cfg.learner_num_cpus, runners=cfg.ppo_num_workers)


def run_puffer(spec: dict) -> dict:
    import pufferlib.vector
    import torch
    from pufferlib.models import Convolutional

    from bench._bench_ours import steady
    from bench._bench_puffer import _import_pufferl, puffer_config
    from training.envs.atari import AtariEnv

    class NatureCNN(Convolutional):  # PuffeRL acts through forward_eval, which Convolutional lacks
        def forward_eval(self, observations, state=None):
            return self.forward(observations, state)

    _, QuietPuffeRL = _import_pufferl()
    torch.manual_seed(spec["seed"])
    # the one native env of 8 games writes into the slice of Serial's buffers it is given (buf)
    vecenv = pufferlib.vector.make(functools.partial(AtariEnv, num_envs=NUM_ENVS, game="breakout"), num_envs=1,
                                   backend=pufferlib.vector.Serial, seed=spec["seed"])
    policy = NatureCNN(vecenv.driver_env, framestack=4, flat_size=64 * 7 * 7, input_size=512, hidden_size=512,
                       output_size=512)
    run_spec = dict(env_spec="breakout", seed=spec["seed"], num_envs=NUM_ENVS, rollout=ROLLOUT,
                    minibatches=MINIBATCHES, epochs=EPOCHS)
    # one batch beyond the budget: the checkpoint PuffeRL writes at the end stays out of the measurement
    config = puffer_config(run_spec, HP, spec["steps"] + NUM_ENVS * ROLLOUT, tempfile.mkdtemp(dir=spec["run_root"]))
    trainer = QuietPuffeRL(config, vecenv, policy)
    started = time.perf_counter()
    deadline = time.time() + spec["max_seconds"]
    points = [(0.0, 0)]
    try:
        while trainer.global_step < spec["steps"] and time.time() < deadline:
            trainer.evaluate()
            trainer.train()
            points.append((time.perf_counter() - started, trainer.global_step))
    finally:
        trainer.utilization.stop()  # PuffeRL's monitor thread is not a daemon
    return dict(steady(points, spec["warmup"]), env_steps_total=trainer.global_step,
                wall_s=time.perf_counter() - started, torch_threads=torch.get_num_threads())


def child(kind: str, spec: dict) -> dict:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.setdefault("WANDB_MODE", "disabled")
    return (run_ours if kind == "ours" else run_puffer)(spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20_480, help="env steps per trainer")
    p.add_argument("--warmup-steps", type=int, default=4_096, help="left out of the steady rate (our window size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", default="default", help="this trainer's --policy (the Nature CNN for pixels)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each, alternated; the table gives each and the best")
    p.add_argument("--max-seconds", type=float, default=900.0, help="per trainer")
    p.add_argument("--run-root", default=None)
    p.add_argument("--json", help="write both results here")
    p.add_argument("--child", choices=("ours", "puffer"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        result = child(args.child, json.loads(args.spec))
        print("RESULT " + json.dumps(result, default=float))
        return 0
    run_root = args.run_root or tempfile.mkdtemp(prefix="bench_atari_")
    results: dict[str, list[dict]] = {"ours": [], "puffer": []}
    for rep in range(args.repeats):  # alternated, so a busy spell on a shared host hits both
        for kind in ("ours", "puffer"):
            spec = dict(steps=args.steps, warmup=args.warmup_steps, seed=args.seed, policy=args.policy,
                        max_seconds=args.max_seconds, run_root=os.path.join(run_root, f"{kind}{rep}"))
            os.makedirs(spec["run_root"], exist_ok=True)
            res = subprocess.run([sys.executable, __file__, "--child", kind, "--spec", json.dumps(spec)], cwd=REPO,
                                 capture_output=True, text=True)
            line = next((x for x in res.stdout.splitlines() if x.startswith("RESULT ")), None)
            if res.returncode != 0 or line is None:
                raise RuntimeError(f"{kind} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
            out = json.loads(line[len("RESULT "):])
            out["loadavg_after"] = os.getloadavg()[0]
            results[kind].append(out)
            print(f"{kind} #{rep}: {out['steady_sps']:.0f} sps steady, {out['env_steps_total']:,} env steps in "
                  f"{out['wall_s']:.0f} s (load average {out['loadavg_after']:.1f})", flush=True)
    best = {k: max(r["steady_sps"] for r in v) for k, v in results.items()}
    names = {"ours": f"this trainer (`--env breakout`, `--policy {args.policy}`)",
             "puffer": "PuffeRL (`pufferlib.models.Convolutional`)"}
    print("\n| trainer | steady sps, each run | best |\n|---|---|---:|")
    for kind, runs in results.items():
        each = ", ".join(f"{r['steady_sps']:,.0f}" for r in runs)
        print(f"| {names[kind]} | {each} | {best[kind]:,.0f} |")
    print(f"\nthis trainer / PuffeRL (best runs): {best['ours'] / best['puffer']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One learner update, alone or beside a sampling runner, at 1 and 2 torch threads.

    .venv/bin/python bench/core_share.py                           # OpenMP's default waits
    .venv/bin/python bench/core_share.py --omp-wait-policy PASSIVE

Why it exists: in overlapped mode on 2 cores the runner samples on one core while the learner
updates; this measures what each thread count costs there, which is how the learner actor picks
its threads (``ray_app.placement.CoreShare``). Ray-free: the "runner" is a second process running
``RolloutCollector.collect`` in a loop (256 envs x 64 steps, no critic, one thread), the learner is
``PPOLearner.learn(off_policy=True)`` on one pre-made batch of the same size (the prospector preset's
update: bfloat16 where native, 4 minibatches x 4 epochs, MLP 256,256). Prints the median seconds of
``--reps`` updates per cell; rounds alternate the thread counts, so compare within a round.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def collector(num_envs: int, steps: int, values: bool):
    from training.envs.registry import make_vecenv
    from training.agent import mlp_agent
    from training.rollout import RolloutCollector

    env = make_vecenv("prospector", num_envs, seed=0)
    policy = mlp_agent(env.single_observation_space, env.single_action_space, hidden=(256, 256))
    return env, RolloutCollector(env, steps, 0, policy=policy, env_name="prospector", step_values=values)


def sample_forever(seconds: float) -> None:
    import torch

    torch.set_num_threads(1)
    _, c = collector(256, 64, values=False)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        c.collect()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--omp-wait-policy", default=None, help="OMP_WAIT_POLICY for both processes (default: unset)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--sampler", type=float, default=0.0, help=argparse.SUPPRESS)  # the child's duration
    args = p.parse_args(argv)
    if args.omp_wait_policy:
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before torch loads OpenMP
    if args.sampler:
        sample_forever(args.sampler)
        return 0

    import numpy as np
    import torch

    from training.config import config_from_args
    from training.envs.env_info import EnvInfo
    from training.learner import PPOLearner

    env, c = collector(256, 64, values=True)
    batch, _ = c.collect()
    cfg = config_from_args({"env": "prospector", "ppo_num_envs": 256, "ppo_rollout_steps": 64})
    learner = PPOLearner(cfg, EnvInfo.of(env))

    def update_s(threads: int) -> float:
        torch.set_num_threads(threads)
        learner.learn([batch], off_policy=True)  # warm-up at this thread count
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            learner.learn([batch], off_policy=True)
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, {os.cpu_count()} cores, "
          f"precision {learner.amp_dtype or 'float32'}; median s per 16,384-sample update")
    print("| round | threads | alone | beside a sampling runner |\n|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for threads in (1, 2):
            alone = update_s(threads)
            cmd = [sys.executable, os.path.abspath(__file__), "--sampler", "600"]
            if args.omp_wait_policy:
                cmd += ["--omp-wait-policy", args.omp_wait_policy]
            sampler = subprocess.Popen(cmd)
            try:
                time.sleep(3)  # its envs are built and it is sampling
                beside = update_s(threads)
            finally:
                sampler.kill()
                sampler.wait()
            print(f"| {r + 1} | {threads} | {alone:.3f} | {beside:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

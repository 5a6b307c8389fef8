"""Where the time of one PPO update goes: PPOLearner.learn on one batch (prospector by default), split by phase.

    .venv/bin/python bench/profile_update.py                     # the prospector preset: 256 envs x 64 steps, 4 mb, 4 epochs
    .venv/bin/python bench/profile_update.py --threads 1,2 --precision float32,bfloat16
    .venv/bin/python bench/profile_update.py --env gym:CartPole-v1 --threads 1 --precision float32
    .venv/bin/python bench/profile_update.py --env training.envs.partial:recall --num-envs 64 \
        --rollout-steps 64 --lstm-sizes 0,128 --threads 2 --precision float32   # LSTM beside MLP

Each phase is timed by wrapping the function that does it (wall clock, summed over the update):
advantages (GAE), the policy's forward pass, log-probs and entropy, the PPO losses, backward,
gradient clipping and the Adam step; "batch prep and rest" is the remainder (joining rollouts,
NumPy -> torch copies, minibatch indexing, the metrics). No Ray: this is the learner actor's work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import training.learner as learner_mod  # noqa: E402
import training.ppo as ppo_mod  # noqa: E402
from training.config import config_from_args  # noqa: E402
from training.agent import Agent  # noqa: E402
from training.envs.env_info import EnvInfo  # noqa: E402
from training.envs.registry import make_vecenv  # noqa: E402
from training.rollout import RolloutCollector  # noqa: E402

PHASES = ("advantages (GAE)", "policy forward", "log-probs, entropy", "losses", "backward", "grad clip",
          "Adam step")
timers: dict[str, float] = defaultdict(float)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[name] += time.perf_counter() - t
    return wrapper


def instrument() -> None:
    learner_mod.compute_gae = timed("advantages (GAE)", learner_mod.compute_gae)
    ppo_mod.forward_float32 = timed("policy forward", ppo_mod.forward_float32)
    ppo_mod.ppo_losses = timed("losses", ppo_mod.ppo_losses)
    Agent.logprob_entropy = timed("log-probs, entropy", Agent.logprob_entropy)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.nn.utils.clip_grad_norm_ = timed("grad clip", torch.nn.utils.clip_grad_norm_)


def profile(args, threads: int, precision: str, lstm_size: int) -> dict:
    flags = dict(env=args.env, ppo_num_envs=args.num_envs, ppo_rollout_steps=args.rollout_steps,
                 ppo_num_minibatches=args.minibatches, ppo_update_epochs=args.epochs)
    cfg = config_from_args(dict({k: v for k, v in flags.items() if v is not None}, ppo_num_workers=1,
                                total_env_steps=10**8, window_env_steps=10**6, kickstart_teacher="none", policy_prior="none",
                                learner_precision=precision, policy="mlp", policy_lstm_size=lstm_size))
    torch.set_num_threads(threads)
    env = make_vecenv(cfg.env, cfg.ppo_num_envs, seed=0)
    learner = learner_mod.PPOLearner(cfg, EnvInfo.of(env))
    with torch.no_grad():  # the batch a runner of this policy would send (a recurrent one: with states)
        batch, _ = RolloutCollector(env, cfg.ppo_rollout_steps, 0, policy=learner.policy).collect()
    learner.optimizer.step = timed("Adam step", learner.optimizer.step)
    learner.learn([batch])  # warm-up: allocator, oneDNN kernels
    timers.clear()
    start = time.perf_counter()
    for _ in range(args.repeats):
        learner.learn([batch])
    total = (time.perf_counter() - start) / args.repeats
    out = {name: timers[name] / args.repeats for name in PHASES}
    out["batch prep and rest"] = total - sum(out.values())
    out["total"] = total
    out["samples_per_s"] = batch["rewards"].size / total
    out["batch"] = (f"{cfg.ppo_num_envs} x {cfg.ppo_rollout_steps} = {batch['rewards'].size:,} samples, "
                    f"{cfg.ppo_num_minibatches} minibatches x {cfg.ppo_update_epochs} epochs, MLP {cfg.policy_hidden}")
    out["policy"] = f"LSTM {lstm_size} + MLP" if lstm_size else "MLP"
    env.close()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # batch settings left out come from the env's preset (prospector: 256 x 64, 4 minibatches, 4 epochs)
    p.add_argument("--env", default="prospector", help="env spec; batch settings default to its preset")
    p.add_argument("--num-envs", type=int, default=None)
    p.add_argument("--rollout-steps", type=int, default=None)
    p.add_argument("--minibatches", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="torch thread counts to try, comma-separated")
    p.add_argument("--precision", default="float32,bfloat16", help="learner precisions to try")
    p.add_argument("--lstm-sizes", default="0", help="policies to try: 0 = the MLP, H = an LSTM of H units before it")
    args = p.parse_args(argv)
    instrument()
    runs = {}
    for lstm_size in (int(h) for h in args.lstm_sizes.split(",")):
        for precision in args.precision.split(","):
            for threads in (int(t) for t in args.threads.split(",")):
                name = f"{precision}, {threads} thr" + (f", LSTM {lstm_size}" if lstm_size else "")
                runs[name] = profile(args, threads, precision, lstm_size)
    names = list(runs)
    print(f"{args.env}: PPO update on {runs[names[0]]['batch']}; ms per update (share of the update)\n")
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for phase in (*PHASES, "batch prep and rest", "total"):
        cells = [f"{runs[n][phase] * 1e3:,.0f} ({runs[n][phase] / runs[n]['total']:.0%})" if phase != "total"
                 else f"**{runs[n][phase] * 1e3:,.0f}**" for n in names]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    print("| samples/s | " + " | ".join(f"{runs[n]['samples_per_s']:,.0f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

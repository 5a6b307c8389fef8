"""Steady-state training throughput and peak memory: this trainer against PuffeRL, RLlib and two limits.

    .venv/bin/python bench/throughput.py                       # prospector, ~10-15 min on 2 cores
    .venv/bin/python bench/throughput.py --env both --time-to-target --json bench_throughput.json
    .venv/bin/python bench/throughput.py --only ours-sync-1,pufferl --steps 60000 --warmup-steps 20000
    .venv/bin/python bench/throughput.py --only ours-async-1,learner-limit --repeat 3   # medians of 3, alternating

Every configuration trains the same env with the same policy (MLP 256,256), the same batch (envs x
rollout steps), minibatches and epochs, for ``--steps`` env steps (or ``--max-seconds``), in a fresh
subprocess; the parent samples the summed RSS of that process tree every 0.2 s and its PSS every 2 s. Steady-state sps
counts decisions summed over envs after the warm-up (``--warmup-steps``; for this trainer: the
windows after the first, with ``--window-env-steps`` = the warm-up). Configurations (``--only``):

  ours-sync-1, ours-sync-2     this trainer (ray_app.driver.train), 1 or 2 env runners, synchronous
  ours-async-1, ours-async-2   the same with overlapped rollouts (async_rollouts=True)
  ours-sync-4, ours-async-4    4 runners (for the scaling model; only when named in --only)
  pufferl                      PufferLib's single-process PuffeRL (bench/_bench_puffer.py)
  rllib-1, rllib-2             RLlib PPO, 1 or 2 env runners, Gymnasium envs (bench/_bench_rllib.py)
  env-limit                    RolloutCollector + the 256,256 policy, no learning, one thread
  learner-limit                PPOLearner.learn on one pre-made batch, repeated, with the learner
                               actor's threads (--learner-num-cpus, default 2)
  learner-limit-overlapped     the same update as overlapped mode does it (V-trace targets from the
                               first epoch's forward passes): the limit of the ours-async lines

``--time-to-target`` adds ttt-ours, ttt-pufferl, ttt-rllib on CartPole-v1: env steps and wall
seconds (start-up included) until the mean episode return first reaches 475 (caps: 500k steps or
10 minutes each; this trainer's run is the 200k-step `prospector train --env gym:CartPole-v1`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench._bench_proc import run_child  # noqa: E402

ENVS = {"prospector": "prospector", "cartpole": "gym:CartPole-v1"}
OURS = ("ours-sync-1", "ours-sync-2", "ours-async-1", "ours-async-2")
SCALING = ("ours-sync-4", "ours-async-4")  # only with --only: 4 runners oversubscribe 2 cores
BASELINES = ("pufferl", "rllib-1", "rllib-2", "env-limit", "learner-limit", "learner-limit-overlapped")
CONFIGS = OURS + BASELINES
TTT = ("ttt-ours", "ttt-pufferl", "ttt-rllib")
TTT_TARGET, TTT_CAP_STEPS, TTT_CAP_S, TTT_OURS_STEPS = 475.0, 500_000, 600, 200_000


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    info = dict(cpu_model=model, nproc=os.cpu_count(), python=platform.python_version(),
                platform=platform.platform())
    try:
        import psutil

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except (ImportError, OSError):
        pass
    return info


def hyperparameters(env_spec: str) -> dict:
    """The trainer's PPO settings for this env (its preset), shared by every configuration."""
    from training.config import config_from_args

    c = config_from_args({"env": env_spec})
    return dict(lr=c.ppo_learning_rate, gamma=c.ppo_gamma, gae_lambda=c.ppo_gae_lambda, clip=c.ppo_clip_coef,
                vf_clip=c.ppo_vf_clip_coef, vf_coef=c.ppo_vf_coef, ent_coef=c.ppo_ent_coef,
                max_grad_norm=c.ppo_max_grad_norm)


def spec_for(name: str, env: str, args, run_root: str) -> dict:
    env_spec = ENVS[env]
    spec = dict(env_spec=env_spec, num_envs=args.num_envs, rollout=args.rollout_steps,
                minibatches=args.minibatches, epochs=args.epochs, hidden=[256, 256], steps=args.steps,
                warmup=args.warmup_steps, max_seconds=args.max_seconds, seed=args.seed, run_root=run_root,
                run_id=f"{env}-{name}", hp=hyperparameters(env_spec), target=TTT_TARGET,
                torch_threads=args.torch_threads, precision=args.precision, learner_cpus=args.learner_cpus)
    if name.startswith("ours-"):
        _, mode, runners = name.split("-")
        spec.update(kind="ours", runners=int(runners), **{"async": mode == "async"})
        spec["torch_threads"] = 0  # the trainer sets its actors' threads itself
    elif name.startswith("rllib-"):
        spec.update(kind="rllib", runners=int(name.split("-")[1]))
    elif name == "pufferl":
        spec.update(kind="puffer")
    elif name.startswith("learner-limit"):
        spec.update(kind="learner_limit", off_policy=name == "learner-limit-overlapped")
    else:
        spec.update(kind=name.replace("-", "_"))
    return spec


def ttt_spec(name: str, args, run_root: str) -> dict:
    env_spec = ENVS["cartpole"]
    spec = dict(env_spec=env_spec, mode="ttt", target=TTT_TARGET, seed=0, run_root=run_root, run_id=f"cartpole-{name}",
                max_seconds=TTT_CAP_S, ttt_cap_steps=TTT_CAP_STEPS, ttt_total_steps=TTT_OURS_STEPS,
                torch_threads=args.torch_threads)
    if name == "ttt-ours":
        spec.update(kind="ours", torch_threads=0)
    elif name == "ttt-pufferl":  # the trainer's CartPole preset, in PuffeRL's terms
        spec.update(kind="puffer", num_envs=8, rollout=32, minibatches=1, epochs=20, hidden=[64, 64],
                    hp=hyperparameters(env_spec))
    else:
        spec.update(kind="rllib")
    return spec


def fmt(x, spec=",.0f", none="-"):
    return none if x is None else format(x, spec)


def wall_sps(r: dict):
    """Steady sps on the wall clock. For this trainer: from the end of its warm-up window to the end
    of its last window, checkpoint writing included; the baselines' figure is already that."""
    return r.get("steady_sps_wallclock", r.get("steady_sps"))


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall-clock sps (the lower middle one for an even count), with every
    repeat's sps attached; a configuration counts as failed only if every repeat failed."""
    ok = sorted((r for r in runs if not r.get("error") and wall_sps(r)), key=wall_sps)
    if not ok:
        return runs[0]
    chosen = dict(ok[(len(ok) - 1) // 2])
    if len(runs) > 1:
        chosen["repeats_sps"] = [None if r.get("error") else wall_sps(r) for r in runs]
    return chosen


def throughput_table(results: dict) -> list[str]:
    best_name = max((n for n in results if n.startswith("ours-") and wall_sps(results[n])),
                    key=lambda n: wall_sps(results[n]), default=None)
    best = wall_sps(results[best_name]) if best_name else None
    lines = ["| configuration | steady sps (trainer's windows) | steady sps (wall clock) | env steps | wall s "
             "| peak RSS MiB | peak PSS MiB | procs | best ours / this |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        sps = wall_sps(r)
        ratio = f"{best / sps:.2f}x" if best and sps else "-"
        note = f" (error: {r['error'][:60]})" if r.get("error") else ""
        if r.get("repeats_sps"):
            note += " (median of " + ", ".join(fmt(x) for x in r["repeats_sps"]) + ")"
        windows = fmt(r.get("steady_sps")) if name.startswith("ours-") else "-"
        lines.append(f"| {name}{note} | {windows} | {fmt(sps)} | {fmt(r.get('env_steps_total'))} "
                     f"| {fmt(r.get('wall_s'), '.1f')} | {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('peak_pss_mib'))} "
                     f"| {r.get('peak_processes', '-')} "
                     f"| {ratio} |")
    if best_name:
        lines.append(f"\nthis trainer's best: {best_name} ({best:,.0f} sps on the wall clock); the ratio is that "
                     "over each line's wall-clock sps (> 1: this trainer is faster)")
    return lines


def round_table(results: dict) -> list[str]:
    """This trainer's lines: where a round's time goes (seconds per round, the driver's view)."""
    lines = ["| configuration | round s (wall clock) | waiting for rollouts | waiting for the update | rest (windows, "
             "weights, submitting) | the update in the learner | update on fewer threads |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        b, sps = r.get("round"), wall_sps(r)
        if b and sps:
            # the rounds' own clock leaves out the recording between them: the wall clock has it
            total = r["config"]["ppo_num_envs"] * r["config"]["ppo_rollout_steps"] / sps
            lines.append(f"| {name} | {total:.3f} | {b['wait_sample']:.3f} | {b['wait_learn']:.3f} "
                         f"| {total - b['wait_sample'] - b['wait_learn']:.3f} | {b['learner_update']:.3f} "
                         f"| {b['learner_shared']:.3f} |")
    return lines if len(lines) > 2 else []


def ttt_table(results: dict) -> list[str]:
    lines = ["| trainer | reached 475 | env steps | wall s | best mean return | peak RSS MiB | peak PSS MiB | settings |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        reached = "error: " + r["error"][:60] if r.get("error") else ("yes" if r.get("reached") else "not reached")
        lines.append(f"| {name} | {reached} | {fmt(r.get('ttt_env_steps'))} | {fmt(r.get('ttt_wall_s'), '.1f')} "
                     f"| {fmt(r.get('best_return'), '.1f')} | {fmt(r.get('peak_rss_mib'))} | {fmt(r.get('peak_pss_mib'))} "
                     f"| {r.get('settings', '')} |")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=("prospector", "cartpole", "both"), default="prospector")
    p.add_argument("--steps", type=int, default=300_000, help="env-step budget per configuration")
    p.add_argument("--warmup-steps", type=int, default=32_768,
                   help="steps not measured (this trainer: its first window; window size = this)")
    p.add_argument("--max-seconds", type=float, default=180.0, help="time cap per configuration")
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--rollout-steps", type=int, default=64)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch threads of single-process baselines (PuffeRL, RLlib's driver-side learner); "
                        "0 = torch's default (one per core)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="training matmul precision of this trainer's learner and of PuffeRL (RLlib: float32)")
    p.add_argument("--learner-cpus", type=float, default=None,
                   help="this trainer's --learner-num-cpus (default: the trainer's own, 2)")
    p.add_argument("--only", default=None, help="comma-separated configuration names (see above)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the configurations this many times, alternating, and report each one's median run")
    p.add_argument("--time-to-target", action="store_true", help="also CartPole-v1 time to mean return 475")
    p.add_argument("--json", default=None, help="write every result (and the machine) to this file")
    p.add_argument("--run-root", default=None, help="where runs and logs go (default: a temp dir, deleted)")
    p.add_argument("--verbose", action="store_true", help="show each configuration's own output")
    args = p.parse_args(argv)
    batch = args.num_envs * args.rollout_steps
    if args.num_envs % 4 or args.num_envs % args.minibatches or batch % args.minibatches:
        p.error("--num-envs must be divisible by 4 (up to 4 runners) and divisible by --minibatches")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.warmup_steps >= args.steps:
        p.error("--warmup-steps must be smaller than --steps")
    known = set(CONFIGS) | set(SCALING) | set(TTT)
    args.only = [s.strip() for s in args.only.split(",")] if args.only else None
    if args.only and set(args.only) - known:
        p.error(f"unknown --only names {sorted(set(args.only) - known)}; known: {', '.join(CONFIGS + SCALING + TTT)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    envs = ["prospector", "cartpole"] if args.env == "both" else [args.env]
    names = [n for n in CONFIGS if not args.only or n in args.only]
    names += [n for n in SCALING if args.only and n in args.only]
    ttt_names = [n for n in TTT if (args.time_to_target and not args.only) or (args.only and n in args.only)]
    run_root = args.run_root or tempfile.mkdtemp(prefix="bench_throughput_")
    logs = os.path.join(run_root, "logs")
    os.makedirs(logs, exist_ok=True)
    info = machine()
    report = dict(machine=info, command=" ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                  args={k: v for k, v in vars(args).items()}, throughput={}, time_to_target={})
    print(f"machine: {info['cpu_model']}, {info['nproc']} cores, {info.get('memory_gib', '?')} GiB; "
          f"load average at start {info.get('load_avg_at_start')}")
    if names:
        print(f"batch {args.num_envs} envs x {args.rollout_steps} steps, {args.minibatches} minibatches, "
              f"{args.epochs} epochs, MLP 256,256; {args.steps:,} steps per configuration "
              f"(warm-up {args.warmup_steps:,}, cap {args.max_seconds:.0f} s)", flush=True)
    print(f"logs in {logs}", flush=True)
    try:
        for env in envs if names else []:
            results = report["throughput"].setdefault(env, {})
            runs: dict[str, list] = {name: [] for name in names}
            for rep in range(args.repeat):  # configurations alternate, so a slow spell hits them alike
                for name in names:
                    spec = spec_for(name, env, args, run_root)
                    tag = "" if args.repeat == 1 else f"-r{rep + 1}"
                    spec["run_id"] += tag
                    print(f"[{env}] {name}{tag} ...", end=" ", flush=True)
                    r = run_child(spec, timeout_s=args.max_seconds + 240,
                                  log_path=os.path.join(logs, f"{env}-{name}{tag}.log"), echo=args.verbose)
                    runs[name].append(r)
                    print(r["error"] if r.get("error") else
                          f"{fmt(wall_sps(r))} sps, {fmt(r.get('wall_s'), '.1f')} s, "
                          f"{fmt(r.get('peak_rss_mib'))} MiB RSS, {fmt(r.get('peak_pss_mib'))} MiB PSS", flush=True)
            for name in names:
                results[name] = median_run(runs[name])
            print(f"\n## {env}: steady-state throughput\n")
            print("\n".join(throughput_table(results)) + "\n", flush=True)
            rounds = round_table(results)
            if rounds:
                print(f"## {env}: where a round's time goes (s per round)\n")
                print("\n".join(rounds) + "\n", flush=True)
        if ttt_names:
            results = report["time_to_target"]
            for name in ttt_names:
                print(f"[cartpole] {name} ...", end=" ", flush=True)
                r = run_child(ttt_spec(name, args, run_root), timeout_s=TTT_CAP_S + 240,
                              log_path=os.path.join(logs, f"cartpole-{name}.log"), echo=args.verbose)
                results[name] = r
                print(r["error"] if r.get("error") else
                      f"reached at {fmt(r.get('ttt_env_steps'))} steps, {fmt(r.get('ttt_wall_s'), '.1f')} s"
                      if r.get("reached") else f"not reached (best {fmt(r.get('best_return'), '.1f')})", flush=True)
            print("\n## CartPole-v1: time to mean return 475\n")
            print("\n".join(ttt_table(results)) + "\n", flush=True)
    finally:
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1, default=str)
            print(f"results written to {args.json}")
        failed = [n for env in report["throughput"].values() for n, r in env.items() if r.get("error")]
        failed += [n for n, r in report["time_to_target"].items() if r.get("error")]
        if failed:
            print(f"failed: {', '.join(failed)}; their logs are kept in {logs}")
        elif not args.run_root:
            shutil.rmtree(run_root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    started = time.time()
    rc = main()
    print(f"total {time.time() - started:.0f} s")
    sys.exit(rc)

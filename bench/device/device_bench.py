"""The GPU benchmark's one table (run through bench/device/run.sh; docs/BENCHMARKS.md, "GPU (H200)").

    python bench/device/device_bench.py                 # on the GPU node, after run.sh installed .whl/
    python bench/device/device_bench.py --cpu           # tiny sizes, CPU, this venv (tests/test_device_bench.py)

Rows, all on one node, the same env (prospector), network (MLP 256,256) and PPO settings:

  learner alone (CUDA)      PPOLearner.learn on one pre-made batch, repeated (bench/profile_update.py's
                            measurement): samples/s of the update alone
  ours, CPU inference       this trainer end to end (`prospector train`): the learner on CUDA, N runners
                            acting on CPU
  ours, GPU inference       the same with --runner-device cuda (each runner a share of the GPU)
  PuffeRL                   PufferLib's single-process trainer on the same batch, its policy and
                            update on CUDA (bench/_bench_puffer.py)

and the ratios of each end-to-end row to PuffeRL and to the learner alone. Steady-state env steps per
second on the wall clock, after the first window (warm-up: CUDA context, kernels, Ray's start).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only, never a cluster
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

GPU = dict(device="cuda", learner_envs=256, envs=252, runners=14, rollout=64, minibatches=4, epochs=4,
           rounds=24, window_rounds=4, repeats=10, puffer_s=150.0, run_s=180.0, precision="auto",
           learner_gpus=0.25, runner_gpus=0.05)
CPU = dict(device="cpu", learner_envs=16, envs=16, runners=2, rollout=16, minibatches=2, epochs=1,
           rounds=6, window_rounds=2, repeats=2, puffer_s=20.0, run_s=60.0, precision="float32",
           learner_gpus=1.0, runner_gpus=0.0)
NETWORK = dict(policy="mlp", policy_hidden="256,256", kickstart_teacher="none", policy_prior="none")


def machine(device: str) -> str:
    import torch

    where = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"
    if device == "cuda":
        where += f", {torch.cuda.get_device_name()}"
    return where


def learner_alone(p: dict) -> dict:
    """samples/s of PPOLearner.learn on one batch of p["learner_envs"] x p["rollout"], on p["device"]."""
    import torch

    from training.config import config_from_args
    from training.envs.env_info import EnvInfo
    from training.envs.registry import make_vecenv
    from training.learner import PPOLearner
    from training.rollout import RolloutCollector

    cfg = config_from_args(dict(NETWORK, env="prospector", ppo_num_envs=p["learner_envs"], ppo_num_workers=1,
                                ppo_rollout_steps=p["rollout"], ppo_num_minibatches=p["minibatches"],
                                ppo_update_epochs=p["epochs"], total_env_steps=10**8, window_env_steps=10**6,
                                learner_precision=p["precision"]))
    env = make_vecenv(cfg.env, cfg.ppo_num_envs, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env), device=p["device"])
    behaviour = learner.policy if p["device"] == "cpu" else None
    if behaviour is None:  # the runners' copy acts on CPU
        from training.agent import build_agent, set_weights

        behaviour = build_agent(learner.policy_spec, EnvInfo.of(env))
        set_weights(behaviour, learner.weights())
    with torch.no_grad():
        batch, _ = RolloutCollector(env, cfg.ppo_rollout_steps, 0, policy=behaviour).collect()
    env.close()
    sync = torch.cuda.synchronize if p["device"] == "cuda" else (lambda: None)
    learner.learn([batch])  # warm-up: the CUDA context, cuBLAS handles, autocast kernels
    sync()
    start = time.perf_counter()
    for _ in range(p["repeats"]):
        learner.learn([batch])
    sync()
    per = (time.perf_counter() - start) / p["repeats"]
    return dict(sps=batch["rewards"].size / per, ms_per_update=per * 1e3, batch=int(batch["rewards"].size),
                precision=str(learner.amp_dtype or "float32").removeprefix("torch."))


def ours(p: dict, runner_device: str, run_root: str) -> dict:
    """`prospector train` end to end; steady sps from its windows' wall clock after the first."""
    steps = p["envs"] * p["rollout"]
    flags = dict(NETWORK, env="prospector", ppo_num_envs=p["envs"], ppo_num_workers=p["runners"],
                 ppo_rollout_steps=p["rollout"], ppo_num_minibatches=p["minibatches"], ppo_update_epochs=p["epochs"],
                 total_env_steps=steps * p["rounds"], window_env_steps=steps * p["window_rounds"],
                 learner_device=p["device"], learner_precision=p["precision"], runner_device=runner_device,
                 run_root=run_root, run_id=f"ours-{runner_device}", checkpoint_every_windows=1000, keep_checkpoints=1)
    if p["device"] == "cuda":
        flags["learner_num_gpus"] = p["learner_gpus"]
    if runner_device == "cuda":
        flags["runner_num_gpus"] = p["runner_gpus"]
    cmd = [sys.executable, "-m", "ray_app", "train"]
    for k, v in flags.items():
        cmd += ["--" + k.replace("_", "-"), str(v)]
    log = Path(run_root) / f"ours-{runner_device}.log"
    started = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=p["run_s"])
        except subprocess.TimeoutExpired:  # the driver's own stop: finish the round, close the window
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    windows = Path(run_root) / f"ours-{runner_device}" / "metrics" / "windows.jsonl"
    rows = [json.loads(line) for line in windows.read_text().splitlines()] if windows.exists() else []
    rows = [r for r in rows if r.get("window_complete", True)]
    result = dict(rc=proc.returncode, windows=len(rows), wall_s=time.time() - started, log=str(log))
    if proc.returncode != 0 or len(rows) < 2:
        result["error"] = f"exit {proc.returncode}, {len(rows)} windows: " + log.read_text()[-600:]
        return result
    dt = rows[-1]["wall_time_s"] - rows[0]["wall_time_s"]
    result["sps"] = (rows[-1]["env_steps_end"] - rows[0]["env_steps_end"]) / dt if dt > 0 else None
    return result


def puffer(p: dict, run_root: str) -> dict:
    """PuffeRL, same env, network and batch as the end-to-end rows, its update on p["device"]."""
    from bench._bench_puffer import run_puffer
    from bench.throughput import hyperparameters

    steps = p["envs"] * p["rollout"]
    spec = dict(env_spec="prospector", num_envs=p["envs"], rollout=p["rollout"], minibatches=p["minibatches"],
                epochs=p["epochs"], hidden=[256, 256], steps=steps * p["rounds"], warmup=steps * p["window_rounds"],
                max_seconds=p["puffer_s"], seed=0, run_root=run_root, hp=hyperparameters("prospector"),
                device=p["device"], precision="bfloat16" if p["device"] == "cuda" else "float32")
    r = run_puffer(spec, time.time())
    return dict(sps=r.get("steady_sps"), env_steps=r.get("env_steps_total"), wall_s=r.get("wall_s"))


def fmt(x, spec=",.0f") -> str:
    return "-" if x is None else format(x, spec)


def table(p: dict, rows: dict) -> list[str]:
    learner = rows["learner alone"].get("sps")
    puff = rows["PuffeRL"].get("sps")
    lines = ["| configuration | steady sps | / PuffeRL | / learner alone | notes |", "|---|---:|---:|---:|---|"]
    for name, r in rows.items():
        sps = r.get("sps")
        ratio = lambda ref: f"{sps / ref:.2f}x" if sps and ref else "-"  # noqa: E731
        note = r.get("error", r.get("note", ""))[:160].replace("\n", " ").replace("|", "/")
        lines.append(f"| {name} | {fmt(sps)} | {ratio(puff)} | {ratio(learner)} | {note} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="tiny sizes on CPU (no GPU needed): the test suite's check")
    ap.add_argument("--json", default=None, help="also write every figure to this file")
    ap.add_argument("--run-root", default=None, help="where runs and logs go (default: a temp dir)")
    ap.add_argument("--only", default=None, help="comma-separated: learner,ours-cpu,ours-gpu,puffer")
    args = ap.parse_args(argv)
    p = dict(CPU if args.cpu else GPU)
    only = set(args.only.split(",")) if args.only else {"learner", "ours-cpu", "ours-gpu", "puffer"}
    run_root = args.run_root or tempfile.mkdtemp(prefix="bench_device_")
    if p["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: use --cpu", file=sys.stderr)
            return 2
    t0 = time.time()
    print(f"machine: {machine(p['device'])}", flush=True)
    print(f"prospector, MLP 256,256, {p['minibatches']} minibatches x {p['epochs']} epochs; learner alone "
          f"{p['learner_envs']} envs x {p['rollout']} steps; end to end {p['envs']} envs x {p['rollout']} steps, "
          f"{p['runners']} runners; runs in {run_root}", flush=True)
    rows: dict[str, dict] = {}

    def measure(name: str, key: str, fn):
        if key not in only:
            rows[name] = {"note": "not run (--only)"}
            return
        start = time.time()
        try:
            rows[name] = fn()
        except Exception as e:  # noqa: BLE001 - one row's failure still prints the others
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {fmt(rows[name].get('sps'))} sps ({time.time() - start:.0f} s)"
              + (f" error: {rows[name]['error'][:300]}" if "error" in rows[name] else ""), flush=True)

    measure("learner alone", "learner", lambda: learner_alone(p))
    measure("ours, CPU inference", "ours-cpu", lambda: ours(p, "cpu", run_root))
    if p["device"] == "cuda":
        measure("ours, GPU inference", "ours-gpu", lambda: ours(p, "cuda", run_root))
    else:
        rows["ours, GPU inference"] = {"note": "skipped: --cpu has no GPU"}
    measure("PuffeRL", "puffer", lambda: puffer(p, run_root))
    rows["learner alone"]["note"] = rows["learner alone"].get("note") or (
        f"{rows['learner alone'].get('precision', '?')}, {rows['learner alone'].get('ms_per_update', 0):.0f} ms/update")
    print("\n" + "\n".join(table(p, rows)))
    print(f"\ntotal {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(dict(params=p, rows=rows, machine=machine(p["device"])), indent=1,
                                              default=str))
    failed = [n for n, r in rows.items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

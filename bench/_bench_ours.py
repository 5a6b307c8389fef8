"""This trainer (ray_app.driver.train, in-process with an embedded Ray) and the two limits:
env + policy inference alone, and the learner alone on a pre-made batch."""

from __future__ import annotations

import json
import os
import signal
import threading
import time


def steady(points: list[tuple[float, int]], warmup: int) -> dict:
    """points: (seconds, cumulative env steps) after each iteration, in order. The measurement
    starts at the first point at or past ``warmup`` steps and ends at the last point."""
    start = next((i for i, (_, s) in enumerate(points) if s >= warmup), None)
    if start is None or start >= len(points) - 1:
        return {"steady_sps": None, "steady_steps": 0, "steady_s": 0.0}
    (t0, s0), (t1, s1) = points[start], points[-1]
    return {"steady_sps": (s1 - s0) / (t1 - t0) if t1 > t0 else None, "steady_steps": s1 - s0,
            "steady_s": t1 - t0}


def _deadline(seconds: float) -> threading.Timer:
    """SIGINT ourselves at the deadline: the driver then finishes its round, flushes a partial
    window and returns (its own stop path)."""
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    return timer


def _read_windows(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line being written
    return rows


def _train_flags(spec: dict) -> dict:
    return dict(
        env=spec["env_spec"], total_env_steps=spec["steps"], window_env_steps=spec["warmup"],
        ppo_num_envs=spec["num_envs"], ppo_num_workers=spec["runners"], ppo_rollout_steps=spec["rollout"],
        ppo_num_minibatches=spec["minibatches"], ppo_update_epochs=spec["epochs"],
        policy_hidden=",".join(str(h) for h in spec["hidden"]), async_rollouts=bool(spec.get("async")),
        run_root=spec["run_root"], run_id=spec["run_id"], seed=spec["seed"], wandb_mode="disabled",
        # the same plain PPO and MLP as every other line: no teacher, no bot prior, no action mask
        # (the prospector preset's)
        kickstart_teacher="none", policy_prior="none", policy="mlp",
        learner_precision=spec.get("precision", "float32"),
        # no checkpoint inside the measurement, as PuffeRL's line (checkpoint_interval 1e9): the
        # windows here are short (the warm-up's size), and a checkpoint every 2 rounds is no run's
        # cadence (the game's preset writes one per 16 rounds); the final one comes after the last window
        checkpoint_every_windows=10**6,
        **({"learner_num_cpus": spec["learner_cpus"]} if spec.get("learner_cpus") else {}),
    )


def run_ours(spec: dict, t0: float) -> dict:
    from training.config import config_from_args
    from ray_app.driver import train

    if spec.get("mode") == "ttt":
        flags = dict(env=spec["env_spec"], total_env_steps=spec["ttt_total_steps"], window_env_steps=10_000,
                     seed=spec["seed"], run_root=spec["run_root"], run_id=spec["run_id"], wandb_mode="disabled")
    else:
        flags = _train_flags(spec)
    cfg = config_from_args(flags)
    windows_path = os.path.join(spec["run_root"], spec["run_id"], "metrics", "windows.jsonl")
    hit: dict = {}
    done = threading.Event()

    def watch():  # time-to-target: wall clock (Ray start-up included) when the row appears
        while not done.wait(0.2):
            for row in _read_windows(windows_path):
                r = row.get("return_mean")
                if r is not None and r >= spec["target"]:
                    hit.update(env_steps=row["env_steps_end"], wall_s=time.time() - t0, return_mean=r)
                    os.kill(os.getpid(), signal.SIGINT)  # reached: stop the run early
                    return

    watcher = threading.Thread(target=watch, daemon=True) if spec.get("mode") == "ttt" else None
    if watcher:
        watcher.start()
    timer = _deadline(max(1.0, spec["max_seconds"] - (time.time() - t0)))
    started = time.time()
    meta = train(cfg)
    ended = time.time()
    timer.cancel()
    done.set()
    if watcher:
        watcher.join(timeout=2)
    rows = [r for r in _read_windows(windows_path) if r.get("window_complete", True)]
    out = dict(status=meta.get("status"), train_call_s=ended - started, wall_s=ended - t0,
               windows=len(rows), config=cfg.to_dict())
    if spec.get("mode") == "ttt":
        if not hit:  # the last row may have been written after the watcher's last look
            for row in rows:
                if row.get("return_mean") is not None and row["return_mean"] >= spec["target"]:
                    hit.update(env_steps=row["env_steps_end"], wall_s=None, return_mean=row["return_mean"])
                    break
        out.update(reached=bool(hit), ttt_env_steps=hit.get("env_steps"), ttt_wall_s=hit.get("wall_s"),
                   best_return=max((r["return_mean"] for r in rows if r.get("return_mean") is not None),
                                   default=None),
                   env_steps_total=rows[-1]["env_steps_end"] if rows else 0,
                   settings="this trainer's gym:CartPole-v1 preset (8 envs x 32 steps, 1 minibatch, 20 epochs, "
                            "lr 1e-3, gamma 0.98, lambda 0.8, ent 0, MLP 64,64), 10k-step windows")
        return out
    # steady state: windows after the first (warm-up) one; duration of a window = steps / sps
    steady_rows = [r for r in rows[1:] if r.get("sps")]
    steps = sum(r["env_steps_in_window"] for r in steady_rows)
    secs = sum(r["env_steps_in_window"] / r["sps"] for r in steady_rows)
    out.update(steady_sps=steps / secs if secs else None, steady_steps=steps, steady_s=secs,
               env_steps_total=rows[-1]["env_steps_end"] if rows else 0)
    # the same from the windows' wall clock (includes per-window checkpoint writing)
    if len(rows) >= 2:
        dt = rows[-1]["wall_time_s"] - rows[0]["wall_time_s"]
        out["steady_sps_wallclock"] = (rows[-1]["env_steps_end"] - rows[0]["env_steps_end"]) / dt if dt > 0 else None
    out["policy_lag_mean"] = (sum(r.get("policy_lag") or 0 for r in steady_rows) / len(steady_rows)
                              if steady_rows else None)
    out["round"] = round_breakdown(steady_rows, spec["num_envs"] * spec["rollout"])
    return out


def round_breakdown(rows: list[dict], batch: int) -> dict | None:
    """Where the driver's rounds went, seconds per round over ``rows`` (windows of whole rounds of
    ``batch`` env steps): waiting for the rollouts, then for the update, how long the update ran
    inside the learner actor (the rest of that wait is Ray's: arguments in, weights out) and how
    long on fewer threads beside sampling runners. The rows hold per-round means: weighted here by
    each window's rounds."""
    rows = [r for r in rows if r.get("sps")]
    rounds = sum(r["env_steps_in_window"] for r in rows) / batch
    if not rounds:
        return None

    def per_round(key):
        return sum((r.get(key) or 0.0) * r["env_steps_in_window"] / batch for r in rows) / rounds

    return dict(wait_sample=per_round("round_wait_sample_s"), wait_learn=per_round("round_wait_learn_s"),
                learner_shared=per_round("learner_shared_s"), learner_update=per_round("learner_update_s"))


def _collector(spec: dict):
    import torch
    from training.envs.registry import make_vecenv
    from training.agent import mlp_agent
    from training.rollout import RolloutCollector

    torch.set_num_threads(1)
    env = make_vecenv(spec["env_spec"], spec["num_envs"], seed=spec["seed"])
    policy = mlp_agent(env.single_observation_space, env.single_action_space, hidden=tuple(spec["hidden"]))
    return env, RolloutCollector(env, spec["rollout"], spec["seed"], policy=policy, env_name=spec["env_spec"])


def run_env_limit(spec: dict, t0: float) -> dict:
    """Env + policy inference, one process, one torch thread, no learning, no Ray."""
    _, collector = _collector(spec)
    deadline = t0 + spec["max_seconds"]
    start = time.perf_counter()
    points, steps = [(0.0, 0)], 0
    while steps < spec["steps"] and time.time() < deadline:
        batch, _ = collector.collect()
        steps += int(batch["rewards"].size)
        points.append((time.perf_counter() - start, steps))
    return dict(steady(points, spec["warmup"]), env_steps_total=steps, wall_s=time.time() - t0)


def run_learner_limit(spec: dict, t0: float) -> dict:
    """PPOLearner.learn on one pre-made batch (from one collect), repeated, with as many torch
    threads as the trainer's learner actor gets (--learner-num-cpus, default 2).
    Samples/s = batch size / time per learn."""
    import torch
    from training.config import config_from_args
    from training.envs.env_info import EnvInfo
    from training.learner import PPOLearner

    env, collector = _collector(spec)
    batch, _ = collector.collect()
    flags = _train_flags(dict(spec, runners=1, run_root="unused", run_id="unused"))
    cfg = config_from_args({k: v for k, v in flags.items() if k not in ("run_root", "run_id")})
    learner = PPOLearner(cfg, EnvInfo.of(env))
    torch.set_num_threads(max(1, int(cfg.learner_num_cpus)))
    size = int(batch["rewards"].size)
    deadline = t0 + spec["max_seconds"]
    start = time.perf_counter()
    points, samples, learns = [(0.0, 0)], 0, 0
    while samples < spec["steps"] and time.time() < deadline:
        learner.learn([batch], off_policy=bool(spec.get("off_policy")))
        learns += 1
        samples += size
        points.append((time.perf_counter() - start, samples))
    return dict(steady(points, spec["warmup"]), env_steps_total=samples, learns=learns, batch_size=size,
                threads=torch.get_num_threads(), wall_s=time.time() - t0)

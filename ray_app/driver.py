"""The training driver: sample, learn, publish weights, account, write.

The driver holds object references, not arrays: rollouts go from the runners straight to the
learner, and the learner's new weights become one object in the store that every runner reads.
It only fetches the small per-rollout summaries (episode metrics) and the learner's losses.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

import ray

from ray_app.learner import RemoteLearner
from ray_app.placement import check_capacity, cluster_device, learner_options, runner_options
from ray_app.runner import RemoteEnvRunner
from training.config import TrainConfig
from training.envs.registry import check_env_spec
from training.run_store import (
    CHECKPOINT_FORMAT_VERSION, RunStore, default_run_id, metadata_after_checkpoint, metadata_after_window,
    metadata_finished, metadata_resumed, new_metadata,
)
from training.sinks import WandbSink
from training.windowing import WindowAggregator


class StopRequested(Exception):
    """SIGINT/SIGTERM (also `ray job stop`) asked the run to end after a final checkpoint."""


@dataclass
class RunState:
    window_id: int = -1  # last closed window
    env_steps: int = 0
    episodes: int = 0
    last_checkpoint_window: int = -1
    stop_signals: list = field(default_factory=list)


def _install_signal_handlers(state: RunState):
    def handler(signum, frame):
        state.stop_signals.append(signum)
        if len(state.stop_signals) > 1:  # second signal: leave now; every file is written atomically
            print("\nsecond interrupt: exiting immediately", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"\n{signal.Signals(signum).name}: finishing the current round, then a final checkpoint "
              "(interrupt again to exit at once)", file=sys.stderr, flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    return previous


def _start_ray(cfg: TrainConfig) -> bool:
    """Join the cluster named by --address or RAY_ADDRESS (set by `ray job submit`), else start an
    embedded local Ray sized so the configured actors fit. Returns True if we started it."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return True
    # An embedded Ray serves this process only: keep it on loopback (without this Ray swaps
    # 127.0.0.1 for the host's address and listens there).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    need = cfg.ppo_num_workers * cfg.runner_num_cpus + cfg.learner_num_cpus
    ray.init(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), include_dashboard=False, log_to_driver=True)
    return True


def _progress_line(row: dict, cfg: TrainConfig) -> str:
    def num(key, fmt):
        v = row.get(key)
        return "-" if v is None else format(v, fmt)

    pct = 100.0 * row["env_steps_total"] / cfg.total_env_steps
    parts = [
        f"window {row['window_id']:>4}",
        f"steps {row['env_steps_total']:>11,}/{cfg.total_env_steps:,} ({pct:5.1f}%)",
        f"sps {num('sps', ',.0f')}",
        f"return_mean {num('return_mean', '.2f')}",
        f"episodes {row['episodes_completed']}",
    ]
    if row.get("policy_loss") is not None:
        parts.append(f"pg {num('policy_loss', '.4f')} v {num('value_loss', '.4f')} ent {num('entropy', '.3f')} "
                     f"kl {num('approx_kl', '.4f')}")
    return " | ".join(parts)


def _describe(e: BaseException) -> str:
    """'ExceptionType: message' of the root cause: Ray wraps errors raised inside actors."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    return f"{type(e).__name__}: {e}"


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run. Returns the final run metadata."""
    check_env_spec(cfg.env)  # an unknown env fails before anything starts or is written
    if cfg.resume:
        store = RunStore.open(cfg.resume)
        # newest checkpoint that loads; windows.jsonl is cut back to it (no duplicates, no gaps)
        checkpoint_path, checkpoint, kept_rows = store.prepare_resume()
        cfg.run_id = store.run_id
    else:
        cfg.run_id = cfg.run_id or default_run_id()
        store = RunStore.create(cfg.run_root, cfg.run_id)
        store.write_config(cfg.to_dict())
        checkpoint = None

    state = RunState()
    started_ray = _start_ray(cfg)
    previous_handlers = _install_signal_handlers(state)
    if cfg.resume:
        meta = store.read_metadata()
    else:
        meta = new_metadata(cfg.run_id, cfg.trainer_backend, cfg.total_env_steps, cfg.window_env_steps, extra=dict(
            ray_address=ray.get_runtime_context().gcs_address,
            cluster_nodes=len([n for n in ray.nodes() if n["Alive"]]),
            num_env_runners=cfg.ppo_num_workers,
            num_envs=cfg.ppo_num_envs,
        ))
        store.write_metadata(meta)  # readers see "running" before any actor starts
    sink = None
    try:
        learns = cfg.trainer_backend == "puffer_ppo"
        device = cluster_device(cfg.learner_device) if learns else "none"
        check_capacity(cfg, device)
        cfg_dict = cfg.to_dict()
        runners = [RemoteEnvRunner.options(**runner_options(cfg)).remote(cfg_dict, i)
                   for i in range(cfg.ppo_num_workers)]
        obs_space, act_space = ray.get(runners[0].spaces.remote())
        learner = (RemoteLearner.options(**learner_options(cfg, device)).remote(cfg_dict, obs_space, act_space, device)
                   if learns else None)
        meta["runner_nodes"] = sorted(set(ray.get([r.node_id.remote() for r in runners])))
        meta["learner_device"] = device

        if checkpoint is not None:
            state.window_id = checkpoint["window_id"]
            state.env_steps = checkpoint["env_steps_total"]
            state.episodes = checkpoint["episodes_total"]
            state.last_checkpoint_window = state.window_id
            if learner is not None:
                ray.get(learner.load_state_dict.remote(checkpoint["learner"]))
        if cfg.resume:
            meta = metadata_resumed(meta, state.window_id, checkpoint_path, windows=kept_rows)
        store.write_metadata(meta)
        sink = WandbSink(cfg.wandb_mode, cfg.wandb_project, cfg.run_id, cfg_dict, str(store.run_dir))
        if sink.url:
            meta["wandb_run_url"] = sink.url

        agg = WindowAggregator(cfg.run_id, cfg.window_env_steps, start_window_id=state.window_id + 1,
                               start_env_steps=state.env_steps)
        spec = ray.get(learner.policy_spec.remote()) if learner else None
        weights = learner.get_weights.remote() if learner else None
        version = 0
        print(f"run {cfg.run_id}: {cfg.env} | {cfg.ppo_num_workers} runners x {cfg.envs_per_worker} envs | "
              f"backend {cfg.trainer_backend} | learner {device} | {store.run_dir}", flush=True)

        def save_checkpoint():
            ckpt = dict(format_version=CHECKPOINT_FORMAT_VERSION, window_id=state.window_id,
                        env_steps_total=state.env_steps, episodes_total=state.episodes, config=cfg_dict,
                        policy_spec=spec, learner=ray.get(learner.state_dict.remote()) if learner else None)
            path = store.save_checkpoint(state.window_id, ckpt)
            state.last_checkpoint_window = state.window_id
            sink.log_checkpoint(str(store.run_dir / path), state.window_id)
            return metadata_after_checkpoint(meta, state.window_id, state.env_steps, path)

        while state.env_steps < cfg.total_env_steps:
            if state.stop_signals:
                raise StopRequested()
            round_start = time.time()
            # sample: every runner collects one rollout with the current weights
            outs = [r.collect.remote(weights, version, spec) for r in runners]
            summaries = ray.get([summary for _, summary in outs])
            # learn: rollouts go runner -> learner by reference; new weights come back as one object
            losses = None
            if learner is not None:
                losses_ref, weights = learner.learn.remote(*[batch for batch, _ in outs])
                losses = ray.get(losses_ref)
                version += 1
            # account
            steps = sum(s["env_steps"] for s in summaries)
            episodes = [ep for s in summaries for ep in s["episodes"]]
            state.env_steps += steps
            state.episodes += len(episodes)
            rows = agg.add_round(steps, sum(s["reward_sum"] for s in summaries), episodes, losses,
                                 time.time() - round_start)
            # write
            for row in rows:
                state.window_id = row["window_id"]
                store.append_window(row)
                sink.log_window(row)
                meta = metadata_after_window(meta, row)
                if (state.window_id + 1) % cfg.checkpoint_every_windows == 0:
                    meta = save_checkpoint()
                store.write_metadata(meta)
                print(_progress_line(row, cfg), flush=True)

        if cfg.flush_partial_window:
            row = agg.flush_partial()
            if row is not None:
                state.window_id = row["window_id"]
                store.append_window(row)
                sink.log_window(row)
                meta = metadata_after_window(meta, row)
        if state.window_id >= 0 and state.last_checkpoint_window != state.window_id:
            meta = save_checkpoint()
        meta = metadata_finished(meta, "completed")
    except (StopRequested, KeyboardInterrupt):
        if state.window_id >= 0 and state.last_checkpoint_window != state.window_id:
            try:
                meta = save_checkpoint()
            except Exception as e:  # the run is stopping anyway; keep the last good checkpoint
                print(f"final checkpoint failed: {e}", file=sys.stderr)
        meta = metadata_finished(meta, "stopped")
        print(f"stopped; resume with: prospector train --resume {store.run_dir}", flush=True)
    except Exception as e:
        meta = metadata_finished(meta, "failed", error=_describe(e))
        store.write_metadata(meta)
        raise
    finally:
        for s, h in previous_handlers.items():
            signal.signal(s, h)
        if sink is not None:
            sink.finish()
        if started_ray:
            ray.shutdown()
    store.write_metadata(meta)
    print(f"{meta['status']}: {state.env_steps:,} env steps, {state.window_id + 1} windows, "
          f"run directory {store.run_dir}", flush=True)
    return meta

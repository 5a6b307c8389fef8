"""The training driver: sample, learn, publish weights, account, write.

The driver holds object references, not arrays: rollouts go from the runners straight to the
learner, and the learner's new weights become one object in the store that every runner reads.
It only fetches the small per-rollout summaries (episode metrics) and the learner's losses.

Recovery: a lost env runner is replaced inside ``RunnerPool.gather``. A lost learner sends the
run back to its latest checkpoint, through the same path as ``--resume``: every actor is
recreated and restored, the windows after that checkpoint are dropped and played again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import ray
from ray.exceptions import RayActorError

from ray_app.learner import RemoteLearner
from ray_app.local_ray import start_local_ray
from ray_app.placement import check_capacity, cluster_device, learner_options
from ray_app.progress import StatusLine
from ray_app.replay_tasks import ReplayTracker
from ray_app.runner import fetch_states
from ray_app.runner_pool import RunnerKeepsDying, RunnerPool
from training.config import TrainConfig
from training.envs.env_spec import check_env_spec
from training.run_metadata import (
    metadata_after_checkpoint, metadata_after_window, metadata_finished, metadata_resumed, new_metadata,
)
from training.run_store import CHECKPOINT_FORMAT_VERSION, CheckpointError, RunStore, default_run_id, encode_checkpoint
from training.sinks import WandbSink
from training.windowing import WindowAggregator


class LearnerLost(Exception):
    pass


@dataclass
class RunState:
    window_id: int = -1  # last window written
    env_steps: int = 0
    episodes: int = 0
    last_checkpoint_window: int = -1
    learner_restarts: int = 0
    runner_incarnations: list | None = None  # per runner slot, kept across learner replays
    joined_cluster: bool = False
    stop_signals: list = field(default_factory=list)


def describe(e: BaseException) -> str:
    """'ExceptionType: message' of the root cause (Ray wraps errors raised inside actors)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    return f"{type(e).__name__}: {e}"


def _install_signal_handlers(state: RunState) -> dict:
    def handler(signum, frame):
        state.stop_signals.append(signum)
        if len(state.stop_signals) > 1:  # second signal: leave now; every file is written atomically
            print("\nsecond interrupt: exiting immediately", file=sys.stderr, flush=True)
            os._exit(130)
        print(f"\n{signal.Signals(signum).name}: finishing the current round, then a final checkpoint "
              "(interrupt again to exit at once)", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():
        return {}  # embedded use from a worker thread: the host program owns signals
    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def _start_ray(cfg: TrainConfig) -> bool:
    """Join the cluster named by --address or RAY_ADDRESS (set by `ray job submit`), else start an
    embedded local Ray sized so the configured actors fit. Returns True if we connected."""
    if ray.is_initialized():
        return False
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return True
    need = cfg.ppo_num_workers * cfg.runner_num_cpus + cfg.learner_num_cpus
    # Ray's CPUs may outnumber the cores here (one runner + a 2-CPU learner on 2 cores): in
    # overlapped mode the learner keeps off the runners' cores while they sample (placement.CoreShare),
    # so OpenMP keeps its default short spin-wait, which a 2-thread update needs to be fast.
    start_local_ray(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)))
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
    if row.get("teacher_played"):  # kickstarting warm-up: these returns are the teacher's, not the policy's
        parts[3] += f" (teacher played {100 * row['teacher_played']:.0f}%)"
    if row.get("value_loss") is not None:
        parts.append(f"pg {num('policy_loss', '.4f')} v {num('value_loss', '.4f')} ent {num('entropy', '.3f')} "
                     f"kl {num('approx_kl', '.4f')}")
    return " | ".join(parts)


def _open_store(cfg: TrainConfig) -> RunStore:
    if cfg.resume:
        store = RunStore.open(cfg.resume)
        cfg.run_id = store.run_id
        # A missing or corrupt newest checkpoint fails here, before anything of the run changes.
        checkpoints = store.list_checkpoints()
        if not checkpoints:
            raise CheckpointError(f"{store.checkpoints_dir}: no checkpoint to resume from")
        try:
            store.load_checkpoint(checkpoints[-1])
        except CheckpointError as e:
            raise CheckpointError(f"{e} (move it aside to resume from the previous checkpoint)") from None
        return store
    cfg.run_id = cfg.run_id or default_run_id()
    store = RunStore.create(cfg.run_root, cfg.run_id)
    store.write_config(cfg.to_dict())
    return store


def train(cfg: TrainConfig) -> dict:
    """Run (or resume) one training run. Returns the final run metadata."""
    check_env_spec(cfg.env)  # an unknown env fails before anything starts or is written
    store = _open_store(cfg)
    state = RunState()
    started_ray = _start_ray(cfg)
    state.joined_cluster = bool(cfg.address or os.environ.get("RAY_ADDRESS"))
    previous_handlers = _install_signal_handlers(state)
    try:
        return _run(cfg, store, state, started_ray)
    finally:
        # Only once everything is shut down and written: a second signal during Ray's shutdown or
        # the final writes must still exit at once (130), not meet the host's handler.
        for s, h in previous_handlers.items():
            signal.signal(s, h)


def _run(cfg: TrainConfig, store: RunStore, state: RunState, started_ray: bool) -> dict:
    meta = store.read_metadata() if cfg.resume else new_metadata(
        cfg.run_id, cfg.trainer_backend, cfg.total_env_steps, cfg.window_env_steps, extra=dict(
            ray_address=ray.get_runtime_context().gcs_address,
            cluster_nodes=len([n for n in ray.nodes() if n["Alive"]]),
            num_env_runners=cfg.ppo_num_workers, num_envs=cfg.ppo_num_envs,
            runner_restarts=0, learner_restarts=0,
        ))
    store.write_metadata(meta)  # readers see "running" before any actor starts
    sink = WandbSink(cfg.wandb_mode, cfg.wandb_project, cfg.run_id, cfg.to_dict(), str(store.run_dir))
    meta["wandb_run_url"] = sink.url or meta.get("wandb_run_url")
    resume = bool(cfg.resume)
    try:
        while True:
            try:
                meta = _train_from(cfg, store, meta, state, sink, resume)
                break
            except (LearnerLost, RayActorError, RunnerKeepsDying) as e:
                if state.stop_signals:
                    # a signal sent to the whole process group (`timeout`, `kill -- -PGID`) also
                    # reaches Ray's processes: the run is stopping, not failing. The latest
                    # checkpoint and the windows written so far stand.
                    meta = metadata_finished(store.read_metadata(), "stopped")
                    break
                if not isinstance(e, LearnerLost):
                    raise
                state.learner_restarts += 1
                meta = store.read_metadata()  # the last state written, counters included
                meta["learner_restarts"] = state.learner_restarts
                if state.learner_restarts > cfg.max_learner_restarts:
                    raise RuntimeError(f"the learner died {state.learner_restarts} times ({e}); "
                                       f"resume with: prospector train --resume {store.run_dir}") from None
                print(f"learner lost ({e}); replaying from the latest checkpoint", file=sys.stderr, flush=True)
                resume = True
    except Exception as e:
        store.write_metadata(metadata_finished(meta, "failed", error=describe(e)))
        raise
    finally:
        sink.finish()
        if started_ray:
            ray.shutdown()
    store.write_metadata(meta)
    if meta["status"] == "stopped":
        print(f"stopped; resume with: prospector train --resume {store.run_dir}", flush=True)
    print(f"{meta['status']}: {state.env_steps:,} env steps, {state.window_id + 1} windows, "
          f"run directory {store.run_dir}", flush=True)
    latest = meta.get("latest_checkpoint")
    if latest and cfg.trainer_backend != "random":
        # a residual policy leans on its own sampling; its argmax is far worse (docs/BENCHMARKS.md)
        mode = " --stochastic" if cfg.policy_prior else ""
        print(f"evaluate on held-out seeds: prospector eval --checkpoint {store.run_dir / latest['path']}{mode}",
              flush=True)
    return meta


def _train_from(cfg: TrainConfig, store: RunStore, meta: dict, state: RunState, sink, resume: bool) -> dict:
    """Start the actors, restore the latest checkpoint when resuming, and run the loop to the end."""
    learns = cfg.trainer_backend == "puffer_ppo"
    device = cluster_device(cfg.learner_device) if learns else "none"
    check_capacity(cfg, device, autoscaling=state.joined_cluster)
    # the learner's process starts (imports torch) while the runners build their envs
    learner = (RemoteLearner.options(**learner_options(cfg, device)).remote(cfg.to_dict(), device, state.learner_restarts)
               if learns else None)
    pool = None
    try:
        pool = RunnerPool(cfg, state.runner_incarnations)
        state.runner_incarnations = pool.incarnations
        spec = None
        if learner is not None:
            learner.build.remote(pool.obs_space, pool.act_space)
            spec = _learner_ready(learner, cfg)
        runner_nodes = pool.node_ids()
        meta.update(runner_nodes=sorted(set(runner_nodes)), learner_device=device,
                    learner_node=ray.get(learner.node_id.remote()) if learner else None)
        if learner is not None:
            beside = sum(cfg.runner_num_cpus for node in runner_nodes if node == meta["learner_node"])
            learner.share_cores.remote(beside)
        if resume:
            checkpoint_path, checkpoint, kept_rows = store.prepare_resume()
            state.window_id, state.env_steps, state.episodes = -1, 0, 0
            exact = False
            if checkpoint is not None:
                state.window_id = checkpoint["window_id"]
                state.env_steps = checkpoint["env_steps_total"]
                state.episodes = checkpoint["episodes_total"]
                if learner is not None:
                    ray.get(learner.load_state_dict.remote(checkpoint["learner"]))
                exact = pool.load_state_dicts(checkpoint.get("runners") or [])
            state.last_checkpoint_window = state.window_id
            meta = metadata_resumed(meta, state.window_id, checkpoint_path, windows=kept_rows)
            meta["resumes"][-1]["exact_env_state"] = exact
        store.write_metadata(meta)
        return _loop(cfg, store, meta, state, sink, pool, learner, spec)
    finally:
        if pool is not None:
            pool.shutdown()
        if learner is not None:
            ray.kill(learner)


def _loop(cfg, store, meta, state, sink, pool, learner, spec) -> dict:
    agg = WindowAggregator(cfg.run_id, cfg.window_env_steps, start_window_id=state.window_id + 1,
                           start_env_steps=state.env_steps)
    weights = learner.get_weights.remote() if learner else None
    version = 0
    restarts_before = meta.get("runner_restarts", 0)
    print(f"run {cfg.run_id}: {cfg.env} | {cfg.ppo_num_workers} runners x {cfg.envs_per_worker} envs | "
          f"backend {cfg.trainer_backend} | learner {meta.get('learner_device')} | {store.run_dir}", flush=True)

    def checkpoint(meta):
        header = dict(format_version=CHECKPOINT_FORMAT_VERSION, window_id=state.window_id,
                      env_steps_total=state.env_steps, episodes_total=state.episodes, config=cfg.to_dict(),
                      policy_spec=spec)
        # overlapped mode: a round is in flight, so the runners' state is ahead of the accounting;
        # a resume then restarts their envs (exact accounting, not trajectories)
        runner_refs = None if overlap else pool.state_refs()
        if learner is not None:  # the learner encodes: runner states go to it by reference
            ckpt = _call_learner(learner.checkpoint.remote(header, runner_refs))
        else:  # random backend: no learner process, so torch loads here to encode
            ckpt = encode_checkpoint({**header, "learner": None, "runners": fetch_states(runner_refs)})
        path = store.save_checkpoint(state.window_id, ckpt)
        state.last_checkpoint_window = state.window_id
        sink.log_checkpoint(str(store.run_dir / path), state.window_id)
        replays.submit(state.window_id, path, state.env_steps, spec, weights)
        return metadata_after_checkpoint(meta, state.window_id, state.env_steps, path)

    def write_window(meta, row):
        state.window_id = row["window_id"]
        store.append_window(row)
        sink.log_window(row)
        status_line.clear()
        status_line.window(row)
        print(_progress_line(row, cfg), flush=True)
        pool.window_closed()
        return metadata_after_window(meta, row)

    status = "completed"
    status_line = StatusLine(cfg.total_env_steps)
    replays = ReplayTracker(cfg, store.run_dir, cfg.run_id)
    overlap = cfg.async_rollouts and learner is not None
    def teach():  # kickstarting: the teacher plays during the warm-up, then labels until its weight is 0
        if not cfg.kickstart_teacher or state.env_steps >= cfg.kickstart_steps:
            return False
        return "drive" if state.env_steps < cfg.kickstart_warmup_steps else True

    in_flight = pool.submit(weights, version, spec, teach()) if state.env_steps < cfg.total_env_steps else None
    while in_flight is not None:
        round_start = time.time()
        # sample: every runner's rollout of this round
        outs = pool.gather(in_flight, give_up=lambda: bool(state.stop_signals))
        sampled = time.time()
        steps = sum(summary["env_steps"] for _, summary in outs)
        more = state.env_steps + steps < cfg.total_env_steps and not state.stop_signals
        # overlapped mode: the next round starts now, with the weights the learner is about to replace
        in_flight = pool.submit(weights, version, spec, teach()) if overlap and more else None
        # learn: rollouts go runner -> learner by reference; new weights come back as one object
        losses, lag = None, None
        if learner is not None:
            lag = sum(version - summary["policy_version"] for _, summary in outs) / len(outs)
            sampling = pool.summary_refs(in_flight) if in_flight else None
            losses_ref, weights = learner.learn.remote(*[batch for batch, _ in outs], off_policy=overlap,
                                                       sampling=sampling)
            losses = _call_learner(losses_ref)
            version += 1
        learned = time.time()
        # account
        summaries = [summary for _, summary in outs]
        episodes = [ep for s in summaries for ep in s["episodes"]]
        state.env_steps += steps
        state.episodes += len(episodes)
        rows = agg.add_round(steps, sum(s["reward_sum"] for s in summaries), episodes, losses,
                             time.time() - round_start,
                             extra=_extra_metrics(lag, losses, sampled - round_start, learned - sampled))
        # write
        for row in rows:
            meta = write_window(meta, row)
            meta["runner_restarts"] = restarts_before + pool.restarts_total
            if (state.window_id + 1) % cfg.checkpoint_every_windows == 0:
                meta = checkpoint(meta)
            store.write_metadata(meta)
        if replays.pending:
            meta = replays.collect(meta, sink)
            store.write_metadata(meta)
        status_line.update(state.env_steps)
        if more and not overlap:  # only now: a checkpoint above must see the runners between rounds
            in_flight = pool.submit(weights, version, spec, teach())
    status_line.clear()
    if state.stop_signals and state.env_steps < cfg.total_env_steps:
        status = "stopped"

    if status == "completed" and not cfg.flush_partial_window and agg.pending_env_steps:
        print(f"note: the last {agg.pending_env_steps:,} env steps closed no window, so they are in no window "
              "row and no checkpoint; --flush-partial-window keeps them", flush=True)
    if status == "stopped" or cfg.flush_partial_window:
        row = agg.flush_partial()
        if row is not None:
            meta = write_window(meta, row)
    if state.window_id >= 0 and state.last_checkpoint_window != state.window_id:
        meta = checkpoint(meta)
    meta["runner_restarts"] = restarts_before + pool.restarts_total
    if status == "completed":  # a stopped run does not wait for its evaluation episodes
        meta = replays.collect(meta, sink, wait=True)
    return metadata_finished(meta, status)


def _extra_metrics(lag, losses, wait_sample_s: float, wait_learn_s: float) -> dict | None:
    """Per-round scalars beyond the contract's losses, averaged per window: the policy lag, and
    where the driver's round went (waiting for the rollouts, then for the update), and how long the
    update ran on fewer threads beside sampling runners (overlapped mode on shared cores)."""
    if lag is None:
        return None
    extra = {"policy_lag": lag, "round_wait_sample_s": wait_sample_s, "round_wait_learn_s": wait_learn_s}
    for key in ("distill_loss", "teacher_played", "rollin_share", "learner_shared_s"):
        if key in losses:
            extra[key] = losses[key]
    return extra


def _learner_ready(learner, cfg) -> dict:
    """The learner's policy spec, once it is placed; a learner that cannot be placed (e.g. its
    node's CPUs are taken by runners) fails the run clearly instead of waiting forever."""
    try:
        return ray.get(learner.policy_spec.remote(), timeout=cfg.wait_for_resources_s)
    except ray.exceptions.GetTimeoutError:
        where = f" on a node with resource {cfg.learner_resource!r}" if cfg.learner_resource else ""
        raise RuntimeError(f"the learner could not be placed within {cfg.wait_for_resources_s:g}s: it needs "
                           f"{cfg.learner_num_cpus:g} CPUs{where} (--learner-num-cpus)") from None


def _call_learner(ref):
    try:
        return ray.get(ref)
    except RayActorError as e:
        raise LearnerLost(type(e).__name__) from e

"""The training driver: sample, learn, publish weights, account, write.

The driver holds object references, not arrays: rollouts go from the runners straight to the
learner, and the learner's new weights become one object in the store that every runner reads.
It only fetches the small per-rollout summaries (episode metrics) and the learner's losses.

Recovery: a lost env runner is replaced inside ``RunnerPool.gather``. A lost learner sends the
run back to its latest checkpoint, through the same path as ``--resume``: every actor is
recreated and restored, the windows after that checkpoint are dropped and played again. A hung
runner or learner (``--runner-timeout-s``, ``--learner-timeout-s``) is handled as a lost one, and
rollouts lost with their node before the learner fetched them are collected again (``_learn``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import ray
from ray.exceptions import RayActorError

from ray_app.chaos import kill_node_of
from ray_app.learner_group import kill_learners, start_learners
from ray_app.placement import check_capacity, cluster_device
from ray_app.recorder import RunRecorder
from ray_app.replay_tasks import ReplayTracker
from ray_app.runner import fetch_states
from ray_app.runner_pool import RunnerKeepsDying, RunnerPool
from ray_app.startup import RayUnavailable, open_store, start_ray
from training.checkpoints import encode_checkpoint
from training.config import ConfigError, TrainConfig
from training.envs.env_spec import EnvSpecError, check_env_spec
from training.envs.plugin import PluginError
from training.faults import node_fault, parse_faults
from training.run_lease import RunLease
from training.run_metadata import metadata_finished, metadata_resumed, new_metadata
from training.run_store import RunStore
from training.sinks import check_wandb_credentials, run_sinks
from training.storage import discard_partial_writes


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
    exit_on_second_signal: bool = True  # the CLI's; a notebook's kernel must survive it
    on_window: Callable[[dict], object] | None = None  # the API's per-window callback
    window_state: dict | None = None  # a resumed run's open window (WindowAggregator.state_dict)


def describe(e: BaseException) -> str:
    """'ExceptionType: message' of the root cause (Ray wraps errors raised inside actors)."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    return f"{type(e).__name__}: {e}"


def _install_signal_handlers(state: RunState) -> dict:
    def handler(signum, frame):
        state.stop_signals.append(signum)
        if sum(isinstance(s, int) for s in state.stop_signals) > 1:  # second signal: leave now; every file is written atomically
            if not state.exit_on_second_signal:
                raise KeyboardInterrupt  # the API's caller (a notebook) keeps its process
            print("\nsecond interrupt: exiting immediately", file=sys.stderr, flush=True)
            discard_partial_writes()  # a write cut short here (or in the lease's thread) leaves no temp file
            os._exit(130)
        print(f"\n{signal.Signals(signum).name}: finishing the current round, then a final checkpoint "
              "(interrupt again to exit at once)", file=sys.stderr, flush=True)

    if threading.current_thread() is not threading.main_thread():
        return {}  # embedded use from a worker thread: the host program owns signals
    return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}


def train(cfg: TrainConfig, on_window=None, exit_on_second_signal: bool = True) -> dict:
    """Run (or resume) one training run. Returns the final run metadata. ``on_window(row)`` is
    called with every window row once it is written; returning False stops the run as an
    interrupt does (final checkpoint, status ``stopped``)."""
    check_env_spec(cfg.env, cfg.env_kwargs)  # an unknown env fails before anything starts or is written
    check_wandb_credentials(cfg.wandb_mode)
    new_run = not cfg.resume
    store = open_store(cfg)
    lease = RunLease(store.run_dir).acquire()  # one writer: before this driver writes anything of the run
    try:
        return _train_with_lease(cfg, store, on_window, exit_on_second_signal)
    except (ConfigError, EnvSpecError, PluginError):
        # settings only the actors could judge (an env that does not build, a policy that does
        # not fit it): the run never began, so a new run leaves no directory behind
        if new_run and not store.read_windows():
            lease.release()
            store.discard()
        raise
    finally:
        lease.release()


def _train_with_lease(cfg: TrainConfig, store: RunStore, on_window, exit_on_second_signal: bool) -> dict:
    state = RunState(exit_on_second_signal=exit_on_second_signal, on_window=on_window)
    try:
        started_ray = start_ray(cfg)
    except Exception as e:  # a wrong --address, a cluster gone: the run is failed, and resumable from zero
        error = RayUnavailable(f"cannot start or join Ray ({describe(e)})")
        meta = store.read_metadata() if cfg.resume else new_metadata(
            cfg.run_id, cfg.trainer_backend, cfg.total_env_steps, cfg.window_env_steps)
        store.write_metadata(metadata_finished(meta, "failed", error=describe(error)))
        raise error from None
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
    resume, sink = bool(cfg.resume), None
    try:
        sink, wandb_url = run_sinks(cfg, store.run_dir)  # W&B online without a key fails here: a failed run
        meta["wandb_run_url"] = wandb_url or meta.get("wandb_run_url")
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
                if isinstance(e, RunnerKeepsDying):
                    raise
                # the learner died, or an actor died outside a round's recovery (a runner while the
                # actors start): start them all again from the latest checkpoint
                state.learner_restarts += 1
                meta = store.read_metadata()  # the last state written, counters included
                meta["learner_restarts"] = state.learner_restarts
                if state.learner_restarts > cfg.max_learner_restarts:
                    raise RuntimeError(f"the learner died {state.learner_restarts} times ({e}); "
                                       f"resume with: prospector train --resume {store.run_dir}") from None
                lost = f"learner lost ({e})" if isinstance(e, LearnerLost) else f"an actor lost ({type(e).__name__})"
                print(f"{lost}; replaying from the latest checkpoint", file=sys.stderr, flush=True)
                resume = True
    except Exception as e:
        store.write_metadata(metadata_finished(meta, "failed", error=describe(e)))
        raise
    finally:
        if sink is not None:
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
    # --num-learners N > 1: a LearnerGroup, with the same methods (ray_app/learner_group.py)
    learner = start_learners(cfg, device, state.learner_restarts) if learns else None
    pool = None
    try:
        pool = RunnerPool(cfg, state.runner_incarnations)
        state.runner_incarnations = pool.incarnations
        spec = None
        if learner is not None:
            spec = _learner_ready(learner, learner.build.remote(pool.env_info), cfg)
        runner_nodes = pool.node_ids()
        meta.update(runner_nodes=sorted(set(runner_nodes)), learner_device=device, num_learners=cfg.num_learners,
                    runner_device=cfg.runner_device,
                    agents_per_env=pool.env_info.num_agents,
                    learner_node=ray.get(learner.node_id.remote()) if learner else None)
        if learner is not None:
            beside = sum(cfg.runner_num_cpus for node in runner_nodes if node == meta["learner_node"])
            learner.share_cores.remote(beside)
        if resume:
            checkpoint_path, checkpoint, kept_rows = store.prepare_resume()
            state.window_id, state.env_steps, state.episodes, state.window_state = -1, 0, 0, None
            exact = False
            if checkpoint is not None:
                state.window_state = checkpoint.get("window_state")  # older checkpoints: none
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
            kill_learners(learner)


def _loop(cfg, store, meta, state, sink, pool, learner, spec) -> dict:
    """Sample, learn, record, until the run's steps are done or a signal stops it."""
    overlap = cfg.async_rollouts and learner is not None

    def encode(header):  # the checkpoint's bytes, from whoever holds the states
        # the runners are between rounds at every checkpoint (overlapped mode holds the next round
        # back), so their states match the accounting and a resume replays their trajectories;
        # a round still in flight would leave only the accounting exact
        runner_refs = None if in_flight is not None else pool.state_refs()
        if learner is not None:  # the learner encodes: runner states go to it by reference
            return _call_learner(learner.checkpoint.remote(header, runner_refs), cfg.learner_timeout_s)
        # random backend: no learner process, so torch loads here to encode
        return encode_checkpoint({**header, "learner": None, "runners": fetch_states(runner_refs)})

    replays = ReplayTracker(cfg, store.run_dir, cfg.run_id, pool.env_info)
    recorder = RunRecorder(cfg, store, meta, state, sink, pool, replays, encode, spec)
    print(f"run {cfg.run_id}: {cfg.env} | {cfg.ppo_num_workers} runners x {cfg.envs_per_worker} envs | "
          f"backend {cfg.trainer_backend} | learner {meta.get('learner_device')} | {store.run_dir}", flush=True)

    def teach():  # kickstarting: the teacher plays during the warm-up, then labels until its weight is 0
        if not cfg.kickstart_teacher or state.env_steps >= cfg.kickstart_steps:
            return False
        return "drive" if state.env_steps < cfg.kickstart_warmup_steps else True

    weights = learner.get_weights.remote() if learner else None
    version, faults = 0, parse_faults(cfg.fault_inject)
    in_flight = (pool.submit(weights, version, spec, teach(), _round_steps(cfg, state.env_steps))
                 if state.env_steps < cfg.total_env_steps else None)
    rounds = 0
    while in_flight is not None:
        round_start, round_, rounds = time.time(), in_flight, rounds + 1
        # sample: every runner's rollout of this round
        outs = pool.gather(round_, give_up=lambda: bool(state.stop_signals))
        if node_fault(faults, rounds):  # test-only: a node dies with this round's rollouts
            kill_node_of(pool.runners)
        summaries = [summary for _, summary in outs]
        sampled = time.time()
        steps = sum(summary["env_steps"] for summary in summaries)
        more = state.env_steps + steps < cfg.total_env_steps and not state.stop_signals
        # overlapped mode: the next round starts now, with the weights the learner is about to replace;
        # unless this round ends a checkpoint's window: the checkpoint must see the runners between rounds
        in_flight = (pool.submit(weights, version, spec, teach(), _round_steps(cfg, state.env_steps + steps))
                     if overlap and more and not recorder.checkpoint_due(steps) else None)
        # learn: rollouts go runner -> learner by reference; new weights come back as one object
        losses, lag = None, None
        if learner is not None:
            lag = sum(version - summary["policy_version"] for summary in summaries) / len(summaries)
            sampling = pool.summary_refs(in_flight) if in_flight else None
            outs, losses, weights = _learn(learner, pool, round_, outs, overlap, sampling, cfg)
            summaries = [summary for _, summary in outs]  # re-collected rollouts bring their own
            version += 1
        learned = time.time()
        # record: windows, checkpoints, metadata, replays
        recorder.record(summaries, losses, lag, weights, sampled - round_start, learned - sampled,
                        time.time() - round_start)
        if more and in_flight is None and not state.stop_signals:  # sync mode, or after a checkpoint
            in_flight = pool.submit(weights, version, spec, teach(), _round_steps(cfg, state.env_steps))
    return recorder.finish(stopped=bool(state.stop_signals))


def _round_steps(cfg: TrainConfig, done: int) -> int:
    """Vector steps of the next round: the configured length, or fewer for the last round, which
    stops at the vector step where the run reaches --total-env-steps."""
    return min(cfg.ppo_rollout_steps, -(-(cfg.total_env_steps - done) // cfg.ppo_num_envs))


def _learner_ready(learner, build_ref, cfg) -> dict:
    """The learner's policy spec, once it is placed and has built the policy; a learner that cannot
    be placed (e.g. its node's CPUs are taken by runners) fails the run clearly instead of waiting
    forever, and a policy that cannot be built is a settings error naming the flag."""
    try:
        ray.get(build_ref, timeout=cfg.wait_for_resources_s)
    except ray.exceptions.GetTimeoutError:
        where = f" on a node with resource {cfg.learner_resource!r}" if cfg.learner_resource else ""
        raise RuntimeError(f"the learner could not be placed within {cfg.wait_for_resources_s:g}s: it needs "
                           f"{cfg.learner_num_cpus:g} CPUs{where} (--learner-num-cpus)") from None
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ConfigError):
            raise e.cause from None
        raise ConfigError("--policy", f"the policy could not be built ({describe(e)})") from None
    return ray.get(learner.policy_spec.remote())


def _learn(learner, pool: RunnerPool, round_: dict, outs: list, overlap: bool, sampling, cfg: TrainConfig):
    """One update on a round's rollouts -> (outs, losses, new weights ref). Rollouts lost from the
    object store before the learner fetched them (their node died after sampling) are collected
    again from replacement runners, with the round's weights, and the update is retried once: the
    failed call never ran, so the learner is as it was."""
    for attempt in (1, 2):
        losses_ref, weights = learner.learn.remote(*[batch for batch, _ in outs], off_policy=overlap, sampling=sampling)
        try:
            return outs, _call_learner(losses_ref, cfg.learner_timeout_s), weights
        except ray.exceptions.ObjectLostError as e:
            if attempt == 2:
                raise
            print(f"rollouts lost ({type(e).__name__}); collecting them again", file=sys.stderr, flush=True)
            outs = pool.recollect_lost(round_, outs)


def _call_learner(ref, timeout_s: float = 0.0):
    """The learner's answer; a dead learner, or one silent for ``timeout_s`` (0: no limit), is lost.
    A list of references (data-parallel learners' updates): learner 0's answer, once every one has
    answered."""
    try:
        if isinstance(ref, list):
            return ray.get(ref, timeout=timeout_s or None)[0]
        return ray.get(ref, timeout=timeout_s or None)
    except RayActorError as e:
        raise LearnerLost(type(e).__name__) from e
    except ray.exceptions.GetTimeoutError:
        raise LearnerLost(f"no answer within --learner-timeout-s {timeout_s:g}: hung") from None
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ray.exceptions.ObjectLostError):
            raise e.cause from None
        raise

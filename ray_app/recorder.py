"""The run recorder: one place that turns each finished round into what a run leaves behind.

``record`` takes a round's summaries and losses and does all the bookkeeping the driver loop
would otherwise interleave with sampling and learning: the round's steps and episodes into the
windows (``training.windowing``), each closed window's row into windows.jsonl, W&B and the
progress line, the checkpoint when one is due (encoded by whoever holds the states, see
``Checkpointer``), evaluation replays beside training, and run_metadata.json after every write.
``finish`` closes the run: the partial window when asked for or stopped, a final checkpoint, the
last replays, the final status.
"""

from __future__ import annotations

from typing import Callable

from ray_app.progress import StatusLine
from ray_app.replay_tasks import ReplayTracker
from training.checkpoints import CHECKPOINT_FORMAT_VERSION
from training.config import TrainConfig
from training.run_metadata import metadata_after_checkpoint, metadata_after_window, metadata_finished
from training.run_store import RunStore
from training.windowing import WindowAggregator

# Learner results beyond the contract's losses that window rows carry, averaged per window.
_EXTRA_LOSS_KEYS = ("distill_loss", "teacher_played", "rollin_share", "learner_shared_s", "learner_update_s",
                   "nonfinite_minibatches")


def progress_line(row: dict, cfg: TrainConfig) -> str:
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


def extra_metrics(lag, losses, wait_sample_s: float, wait_learn_s: float) -> dict | None:
    """Per-round scalars beyond the contract's losses: the policy lag, where the driver's round
    went (waiting for the rollouts, then for the update), and how long the update ran on fewer
    threads beside sampling runners (overlapped mode on shared cores)."""
    if lag is None:
        return None
    extra = {"policy_lag": lag, "round_wait_sample_s": wait_sample_s, "round_wait_learn_s": wait_learn_s}
    extra.update({key: losses[key] for key in _EXTRA_LOSS_KEYS if key in losses})
    return extra


class RunRecorder:
    """``state``: the driver's RunState (window id, counters), kept current here. ``encode``:
    header -> the checkpoint file's bytes. ``pool``: the runners (restart counts, window resets)."""

    def __init__(self, cfg: TrainConfig, store: RunStore, meta: dict, state, sink, pool,
                 replays: ReplayTracker, encode: Callable[[dict], object], policy_spec: dict | None):
        self.cfg, self.store, self.meta, self.state, self.sink = cfg, store, meta, state, sink
        self.pool, self.replays, self.encode, self.policy_spec = pool, replays, encode, policy_spec
        self.restarts_before = meta.get("runner_restarts", 0)
        self.agg = WindowAggregator(cfg.run_id, cfg.window_env_steps, start_window_id=state.window_id + 1,
                                    start_env_steps=state.env_steps, agents_per_env=pool.env_info.num_agents)
        if state.window_state is not None:  # resumed: the open window as the checkpoint left it
            self.agg.load_state_dict(state.window_state)
        self.status_line = StatusLine(cfg.total_env_steps)
        self.weights = None  # the newest weights, for the replays of the next checkpoint

    def record(self, summaries: list[dict], losses: dict | None, lag, weights, wait_sample_s: float,
               wait_learn_s: float, round_s: float) -> None:
        self.weights = weights
        episodes = [ep for s in summaries for ep in s["episodes"]]
        steps = sum(s["env_steps"] for s in summaries)
        self.state.env_steps += steps
        self.state.episodes += len(episodes)
        step_rewards = [sum(per_runner) for per_runner in zip(*(s["step_rewards"] for s in summaries))]
        rows = self.agg.add_round(steps, sum(s["reward_sum"] for s in summaries), episodes, losses, round_s,
                                  extra=extra_metrics(lag, losses, wait_sample_s, wait_learn_s),
                                  step_rewards=step_rewards,
                                  env_reports=[r for s in summaries for r in s.get("env_reports", ())])
        due = False
        for row in rows:
            self._write_window(row)
            due = due or self._checkpointed(self.state.window_id)
            self.store.write_metadata(self.meta)
        if due:  # once per round, after its last window: the state is the round's end
            self._checkpoint()
            self.store.write_metadata(self.meta)
        if self.replays.pending:
            self.meta = self.replays.collect(self.meta, self.sink)
            self.store.write_metadata(self.meta)
        self.status_line.update(self.state.env_steps)

    def checkpoint_due(self, steps: int) -> bool:
        """Whether recording a round of ``steps`` env steps may write a checkpoint: it reaches a
        window boundary whose window is checkpointed (``--checkpoint-every-windows``). May say yes
        where no checkpoint comes (a vector step passing two boundaries closes one window), never
        the reverse."""
        size, done = self.cfg.window_env_steps, self.state.env_steps
        closing = (done + steps) // size - done // size
        return any(self._checkpointed(self.state.window_id + 1 + i) for i in range(closing))

    def _checkpointed(self, window_id: int) -> bool:
        """Whether window ``window_id`` ends with a checkpoint (``--checkpoint-every-windows``)."""
        return (window_id + 1) % self.cfg.checkpoint_every_windows == 0

    def finish(self, stopped: bool) -> dict:
        """The run's final metadata (not yet written): status completed, or stopped before the end."""
        cfg, state = self.cfg, self.state
        self.status_line.clear()
        status = "stopped" if stopped and state.env_steps < cfg.total_env_steps else "completed"
        if status == "completed" and not cfg.flush_partial_window and self.agg.pending_env_steps:
            print(f"note: the last {self.agg.pending_env_steps:,} env steps closed no window, so they are in no "
                  "window row and no checkpoint; --flush-partial-window keeps them", flush=True)
        if status == "stopped" or cfg.flush_partial_window:
            row = self.agg.flush_partial()
            if row is not None:
                self._write_window(row)
        if state.window_id >= 0 and state.last_checkpoint_window != state.window_id:
            self._checkpoint()
        self.meta["runner_restarts"] = self.restarts_before + self.pool.restarts_total
        if status == "completed":  # a stopped run does not wait for its evaluation episodes
            self.meta = self.replays.collect(self.meta, self.sink, wait=True)
        return metadata_finished(self.meta, status)

    def _write_window(self, row: dict) -> None:
        self.state.window_id = row["window_id"]
        self.store.append_window(row)
        self.sink.log_window(row)
        self.status_line.clear()
        self.status_line.window(row)
        print(progress_line(row, self.cfg), flush=True)
        if self.state.on_window is not None and self.state.on_window(row) is False:
            self.state.stop_signals.append("on_window")  # the caller asked to stop: as an interrupt does
        self.pool.window_closed()
        self.meta = metadata_after_window(self.meta, row)
        self.meta["runner_restarts"] = self.restarts_before + self.pool.restarts_total

    def _checkpoint(self) -> None:
        state = self.state
        header = dict(format_version=CHECKPOINT_FORMAT_VERSION, window_id=state.window_id,
                      env_steps_total=state.env_steps, episodes_total=state.episodes, config=self.cfg.to_dict(),
                      policy_spec=self.policy_spec, window_state=self.agg.state_dict())
        path = self.store.save_checkpoint(state.window_id, self.encode(header))
        state.last_checkpoint_window = state.window_id
        self.sink.log_checkpoint(str(self.store.run_dir / path), state.window_id)
        self.replays.submit(state.window_id, path, state.env_steps, self.policy_spec, self.weights)
        self.meta = metadata_after_checkpoint(self.meta, state.window_id, state.env_steps, path)
        self.store.write_metadata(self.meta)  # names the new checkpoint before an older one goes
        self.store.prune_checkpoints(self.cfg.keep_checkpoints)

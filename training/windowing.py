"""Turn collection rounds into the fixed-size metric windows of ``metrics/windows.jsonl``.

The first version had two bugs this module is shaped to prevent: one return accumulator
shared by every env (returns of different envs got mixed), and "means" that averaged cumulative
per-episode counters once per tick. Here the only episode-level input is one finished-episode
dict per episode, already tracked per env by the runner, and every ``<key>_mean`` is a mean over
the episodes that ended in the window.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable, Iterable

from training.storage import json_safe

LOSS_KEYS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance")

# An env report's weight: the number of episodes it covers, where the env says so (PufferLib's
# aggregated logs carry it as ``n``).
REPORT_WEIGHT_KEY = "n"
REPORT_PREFIX = "env/"

# Episode keys with their own treatment; every other numeric key becomes `<key>_mean`.
_COUNTED_EPISODE_KEYS = ("terminated", "truncated")
_RETURN_KEY = "episode_return"

_BASE_FIELDS = (
    "run_id", "window_id", "window_complete", "env_steps_start", "env_steps_end",
    "env_steps_in_window", "env_steps_total", "episodes_completed", "terminated_episodes",
    "truncated_episodes", "reward_sum", "reward_mean", "return_mean",
)
_TAIL_FIELDS = LOSS_KEYS + ("learning_rate", "sps", "wall_time_s")
RESERVED_FIELDS = frozenset(_BASE_FIELDS + _TAIL_FIELDS)


def _number(value: Any) -> float | None:
    """A finite float, or None for missing/non-numeric/NaN values (they never enter a mean)."""
    if value is None or isinstance(value, str):
        return None
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        try:
            value = value.item()  # 0-d numpy arrays and torch tensors
        except (ValueError, RuntimeError):
            return None
    if not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _MeanAcc:
    """Per-key sum and count (or total weight), so each key is averaged over the items that
    actually had it."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, float] = {}

    def add(self, key: str, value: Any, weight: float = 1) -> None:
        v = _number(value)
        if v is not None:
            self.sums[key] = self.sums.get(key, 0.0) + v * weight
            self.counts[key] = self.counts.get(key, 0) + weight

    def mean(self, key: str) -> float | None:
        n = self.counts.get(key, 0)
        return self.sums[key] / n if n else None


class _Window:
    def __init__(self, env_steps_start: int) -> None:
        self.env_steps_start = env_steps_start
        self.env_steps = 0
        self.reward_sum = 0.0
        self.reward_nonfinite = False
        self.wall_s = 0.0
        self.episodes = 0
        self.terminated = 0
        self.truncated = 0
        self.episode_acc = _MeanAcc()
        self.learner_acc = _MeanAcc()
        self.extra_acc = _MeanAcc()
        self.report_acc = _MeanAcc()
        self.learning_rate: float | None = None


def _by_step(items: Iterable[dict] | None, T: int) -> dict[int, list[dict]]:
    """Copies of ``items`` without their ``_step`` (default: the last), grouped by it."""
    grouped: dict[int, list[dict]] = {}
    for item in items or ():
        item = dict(item)
        grouped.setdefault(min(int(item.pop("_step", T - 1)), T - 1), []).append(item)
    return grouped


class WindowAggregator:
    """Accumulates rounds and emits one row per window.

    Window policy: window j closes at the vector step where the run's step count reaches
    (j + 1) x ``window_env_steps`` (a vector step adds one decision of every env, so a window
    holds whole vector steps: exactly ``window_env_steps`` when that is a multiple of the envs,
    within one vector step of it otherwise, and the boundaries never drift). A round's rewards and
    episodes go to the window of the vector step they happened at; its losses and per-round
    ``extra`` scalars to the window holding its last step, where its update lands. A vector step
    that passes several multiples closes one window. Each window's ``env_steps_start`` equals the
    previous window's ``env_steps_end``.

    ``sps`` is ``env_steps_in_window`` over the wall time of the window's steps (each round's
    wall time, overhead included, split evenly over its vector steps); ``wall_time_s`` in a row
    is seconds on ``clock`` since this aggregator was created, i.e. since the run (or the resumed
    run) started. ``state_dict`` holds the open window, so a resume continues it exactly.

    Multi-agent envs (``agents_per_env`` > 1): env steps count envs, one per env and vector step
    whatever its agents; episodes are the agents' own (``return_mean`` is the mean per agent), and
    ``reward_mean`` is per agent step. Rows then carry ``agents_per_env``.
    """

    def __init__(self, run_id: str, window_env_steps: int, start_window_id: int = 0,
                 start_env_steps: int = 0, *, episode_keys: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic, agents_per_env: int = 1) -> None:
        if int(window_env_steps) <= 0:
            raise ValueError(f"window_env_steps must be positive, got {window_env_steps}")
        if int(start_window_id) < 0 or int(start_env_steps) < 0:
            raise ValueError("start_window_id and start_env_steps must be >= 0")
        self.run_id = run_id
        self.window_env_steps = int(window_env_steps)
        self.agents_per_env = int(agents_per_env)
        self._next_window_id = int(start_window_id)
        self._env_steps_total = int(start_env_steps)
        self._clock = clock
        self._t0 = clock()
        # Keys seen once stay in every later row (None when absent) so columns are stable.
        self._episode_keys: dict[str, None] = {}
        for key in episode_keys:
            if f"{key}_mean" in RESERVED_FIELDS:
                raise ValueError(f"episode metric {key!r} would overwrite row field {key}_mean")
            if key not in (_RETURN_KEY, *_COUNTED_EPISODE_KEYS):
                self._episode_keys[key] = None
        self._extra_keys: dict[str, None] = {}
        self._report_keys: dict[str, None] = {}
        self._win = _Window(self._env_steps_total)

    # -- state the driver may need -------------------------------------------------------------
    @property
    def next_window_id(self) -> int:
        return self._next_window_id

    @property
    def env_steps_total(self) -> int:
        """Steps added so far, including the open window's."""
        return self._env_steps_total

    @property
    def pending_env_steps(self) -> int:
        return self._win.env_steps

    def state_dict(self) -> dict:
        """The open window and the column keys seen (plain Python values, for a checkpoint)."""
        w = dict(vars(self._win))
        for acc in ("episode_acc", "learner_acc", "extra_acc", "report_acc"):
            w[acc] = {"sums": dict(w[acc].sums), "counts": dict(w[acc].counts)}
        return dict(window=w, next_window_id=self._next_window_id, env_steps_total=self._env_steps_total,
                    episode_keys=list(self._episode_keys), extra_keys=list(self._extra_keys),
                    report_keys=list(self._report_keys))

    def load_state_dict(self, state: dict) -> None:
        self._next_window_id = int(state["next_window_id"])
        self._env_steps_total = int(state["env_steps_total"])
        self._episode_keys = dict.fromkeys(state["episode_keys"])
        self._extra_keys = dict.fromkeys(state["extra_keys"])
        self._report_keys = dict.fromkeys(state.get("report_keys", ()))  # none before env reports
        w = _Window(0)
        for key, value in state["window"].items():
            if key.endswith("_acc"):
                acc = _MeanAcc()
                acc.sums, acc.counts = dict(value["sums"]), dict(value["counts"])
                value = acc
            setattr(w, key, value)
        self._win = w

    # -- input ---------------------------------------------------------------------------------
    def add_round(self, env_steps: int, reward_sum: float, episodes: list[dict],
                  learner_metrics: dict | None, wall_time_s: float, *,
                  extra: dict | None = None, step_rewards: list[float] | None = None,
                  env_reports: list[dict] | None = None) -> list[dict]:
        """Add one collection round; return the rows of the windows it closed, in order.

        ``step_rewards``: the round's reward sum per vector step (``env_steps`` must divide into
        them); without it the round counts as one vector step of ``reward_sum``. ``episodes``: one
        dict per episode that ended in this round (``episode_return``, ``episode_length``,
        ``terminated``, ``truncated``, env-specific numeric metrics, and ``_step``, the vector step
        it ended at; default the last). ``learner_metrics``: the update's losses (keys of
        LOSS_KEYS) and ``learning_rate``; None when no update ran (random backend). ``extra``:
        other per-round scalars (e.g. ``policy_lag``), averaged over the window's rounds under
        their own names. ``env_reports``: the env's other numeric info dicts (``_step`` as for
        episodes): each key is averaged over the window's reports into ``env/<key>``, weighted by
        a report's ``n`` (the episodes it covers) where it has one.
        """
        env_steps = int(env_steps)
        if env_steps < 0:
            raise ValueError(f"env_steps must be >= 0, got {env_steps}")
        step_rewards = [reward_sum] if step_rewards is None else list(step_rewards)
        T = len(step_rewards)
        if T == 0 or env_steps % T:
            raise ValueError(f"{env_steps} env steps do not split into {T} vector steps")
        per_step = env_steps // T
        ended_at, reported_at = _by_step(episodes, T), _by_step(env_reports, T)
        rows = []
        for t in range(T):
            w = self._win
            w.env_steps += per_step
            self._env_steps_total += per_step
            w.wall_s += max(0.0, float(wall_time_s)) / T
            r = _number(step_rewards[t])
            if r is None:
                w.reward_nonfinite = True  # one NaN reward poisons the window's sum: report None
            else:
                w.reward_sum += r
            for ep in ended_at.get(t, ()):
                self._add_episode(w, ep)
            for report in reported_at.get(t, ()):
                self._add_report(w, report)
            if t == T - 1:
                self._add_update(w, learner_metrics, extra)
            # the next multiple of the window size after the window's start: never drifts
            if self._env_steps_total >= (w.env_steps_start // self.window_env_steps + 1) * self.window_env_steps:
                rows.append(self._close(complete=True))
        return rows

    def _add_update(self, w: _Window, learner_metrics: dict | None, extra: dict | None) -> None:
        if learner_metrics:
            for key in LOSS_KEYS:
                w.learner_acc.add(key, learner_metrics.get(key))
            lr = _number(learner_metrics.get("learning_rate"))
            if lr is not None:
                w.learning_rate = lr
        for key, value in (extra or {}).items():
            if key in RESERVED_FIELDS or key.endswith("_mean"):
                raise ValueError(f"extra key {key!r} collides with a window row field")
            self._extra_keys.setdefault(key, None)
            w.extra_acc.add(key, value)

    def _add_episode(self, w: _Window, ep: dict) -> None:
        w.episodes += 1
        w.terminated += 1 if _number(ep.get("terminated")) else 0
        w.truncated += 1 if _number(ep.get("truncated")) else 0
        w.episode_acc.add(_RETURN_KEY, ep.get(_RETURN_KEY))
        for key, value in ep.items():
            if key == _RETURN_KEY or key in _COUNTED_EPISODE_KEYS:
                continue
            if key not in self._episode_keys:
                if _number(value) is None:
                    continue  # non-numeric (e.g. a seed string): not a metric
                if f"{key}_mean" in RESERVED_FIELDS:
                    raise ValueError(f"episode metric {key!r} would overwrite row field {key}_mean")
                self._episode_keys[key] = None
            w.episode_acc.add(key, value)

    def _add_report(self, w: _Window, report: dict) -> None:
        weight = _number(report.get(REPORT_WEIGHT_KEY))
        weight = 1.0 if weight is None or weight <= 0 else weight
        for key, value in report.items():
            if key == REPORT_WEIGHT_KEY or _number(value) is None:
                continue
            self._report_keys.setdefault(key, None)
            w.report_acc.add(key, value, weight)

    def flush_partial(self) -> dict | None:
        """Close the open window early (``window_complete`` False); None if it has no step."""
        if self._win.env_steps == 0:
            return None
        return self._close(complete=False)

    # -- output --------------------------------------------------------------------------------
    def _close(self, complete: bool) -> dict:
        w = self._win
        steps = w.env_steps
        reward_sum = None if w.reward_nonfinite else w.reward_sum
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "window_id": self._next_window_id,
            "window_complete": complete,
            "env_steps_start": w.env_steps_start,
            "env_steps_end": w.env_steps_start + steps,
            "env_steps_in_window": steps,
            "env_steps_total": w.env_steps_start + steps,
            "episodes_completed": w.episodes,
            "terminated_episodes": w.terminated,
            "truncated_episodes": w.truncated,
            "reward_sum": reward_sum,
            "reward_mean": reward_sum / (steps * self.agents_per_env) if steps and reward_sum is not None else None,
            "return_mean": w.episode_acc.mean(_RETURN_KEY),
        }
        if self.agents_per_env > 1:
            row["agents_per_env"] = self.agents_per_env
        for key in self._episode_keys:
            row[f"{key}_mean"] = w.episode_acc.mean(key)
        for key in LOSS_KEYS:
            row[key] = w.learner_acc.mean(key)
        row["learning_rate"] = w.learning_rate
        row["sps"] = steps / w.wall_s if w.wall_s > 0 else None
        row["wall_time_s"] = self._clock() - self._t0
        for key in self._extra_keys:
            row[key] = w.extra_acc.mean(key)
        for key in self._report_keys:
            row[REPORT_PREFIX + key] = w.report_acc.mean(key)
        self._next_window_id += 1
        self._win = _Window(self._env_steps_total)
        return json_safe(row)

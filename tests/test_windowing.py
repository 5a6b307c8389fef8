import json

import numpy as np
import pytest

from training.windowing import LOSS_KEYS, WindowAggregator


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def ep(ret, length, terminated=1, truncated=0, **metrics):
    return {"episode_return": ret, "episode_length": length, "terminated": terminated,
            "truncated": truncated, **metrics}


def feed(agg, n, steps=40, **kw):
    rows = []
    for _ in range(n):
        rows += agg.add_round(steps, kw.get("reward", 4.0), kw.get("episodes", []),
                              kw.get("learner"), kw.get("wall", 1.0))
    return rows


def test_windows_close_at_each_multiple_without_drift():
    """Rounds of one 40-env vector step, windows of 100: a window closes at the step that reaches
    100, 200, 300..., so one window holds 120 steps and the next 80, never drifting."""
    agg = WindowAggregator("r", 100)
    out = [agg.add_round(40, 4.0, [], None, 1.0) for _ in range(8)]
    assert [len(o) for o in out] == [0, 0, 1, 0, 1, 0, 0, 1]
    w0, w1, w2 = out[2][0], out[4][0], out[7][0]
    assert (w0["window_id"], w0["env_steps_start"], w0["env_steps_end"]) == (0, 0, 120)
    assert (w1["window_id"], w1["env_steps_start"], w1["env_steps_end"]) == (1, 120, 200)
    assert (w2["env_steps_start"], w2["env_steps_end"]) == (200, 320)
    assert w1["env_steps_total"] == 200 and w0["window_complete"] is True
    assert agg.pending_env_steps == 0 and agg.env_steps_total == 320 and agg.next_window_id == 3


def test_windows_close_mid_round_at_the_vector_step_and_attribute_what_happened_there():
    """Rounds of 10 vector steps of 8 envs (80 steps), windows of 100: windows close at the vector
    steps reaching 104, 200 and 304. Rewards and episodes go to the window of their vector step,
    a round's losses to the window holding its last step."""
    agg = WindowAggregator("r", 100)
    rounds = []
    for r in range(4):
        episodes = [dict(ep(float(10 * r + t), 5), _step=t) for t in (2, 3)]
        rounds.append(agg.add_round(80, 10.0, episodes, {"policy_loss": float(r)}, 1.0,
                                    step_rewards=[1.0] * 10))
    assert [len(rows) for rows in rounds] == [0, 1, 1, 1]
    w0, w1, w2 = (rows[0] for rows in rounds[1:])
    assert [(w["env_steps_start"], w["env_steps_end"]) for w in (w0, w1, w2)] == [(0, 104), (104, 200), (200, 304)]
    assert [w["reward_sum"] for w in (w0, w1, w2)] == [13.0, 12.0, 13.0]
    # round 1's vector steps 11..20: t=2 is step 13 (total 104, closing window 0), t=3 is window 1's
    assert w0["episodes_completed"] == 3 and w0["return_mean"] == pytest.approx((2 + 3 + 12) / 3)
    assert w1["episodes_completed"] == 3 and w1["return_mean"] == pytest.approx((13 + 22 + 23) / 3)
    # round 0 ends at 80 (window 0), round 1 at 160 (window 1), round 2 at 240 (window 2)
    assert (w0["policy_loss"], w1["policy_loss"], w2["policy_loss"]) == (0.0, 1.0, 2.0)
    assert agg.pending_env_steps == 16 and agg.env_steps_total == 320


def test_state_dict_continues_the_open_window_exactly():
    def run(split):
        agg = WindowAggregator("r", 100, clock=lambda: 0.0)
        rows = []
        for r in range(6):
            if r == split:
                state = agg.state_dict()
                agg = WindowAggregator("r", 100, start_window_id=99, start_env_steps=99, clock=lambda: 0.0)
                agg.load_state_dict(state)
            rows += agg.add_round(80, 10.0, [dict(ep(float(r), 5), _step=r, score=r)], {"policy_loss": r}, 1.0,
                                  step_rewards=[1.0] * 10, extra={"policy_lag": r})
        return rows

    assert run(split=None) == run(split=3)


def test_ids_and_steps_continue_from_resume_point():
    agg = WindowAggregator("r", 100, start_window_id=5, start_env_steps=1000)
    rows = feed(agg, 10, steps=50)
    assert [r["window_id"] for r in rows] == [5, 6, 7, 8, 9]
    assert rows[0]["env_steps_start"] == 1000
    for prev, cur in zip(rows, rows[1:]):
        assert cur["env_steps_start"] == prev["env_steps_end"]
    assert rows[-1]["env_steps_total"] == 1500


def test_one_huge_round_closes_exactly_one_window():
    agg = WindowAggregator("r", 100)
    rows = agg.add_round(350, 0.0, [], None, 1.0)
    assert len(rows) == 1 and rows[0]["env_steps_in_window"] == 350
    assert agg.add_round(10, 0.0, [], None, 1.0) == []


def test_return_mean_is_per_episode_of_this_window_and_none_without_episodes():
    agg = WindowAggregator("r", 100)
    # two envs' episodes of very different lengths end in the same round
    agg.add_round(60, 6.0, [ep(10.0, 5, env_id=0), ep(-2.0, 55, env_id=1)], None, 1.0)
    (w0,) = agg.add_round(60, 6.0, [ep(1.0, 30, terminated=0, truncated=1, env_id=1)], None, 1.0)
    assert w0["return_mean"] == pytest.approx((10.0 - 2.0 + 1.0) / 3)
    assert w0["episode_length_mean"] == pytest.approx((5 + 55 + 30) / 3)
    counts = (w0["episodes_completed"], w0["terminated_episodes"], w0["truncated_episodes"])
    assert counts == (3, 2, 1)
    (w1,) = feed(agg, 3)
    assert w1["return_mean"] is None and w1["episodes_completed"] == 0
    assert "episode_length_mean" in w1 and w1["episode_length_mean"] is None  # stable columns
    assert w0["reward_sum"] == 12.0 and w0["reward_mean"] == pytest.approx(12.0 / 120)


def test_env_metrics_are_means_over_episodes_not_ticks():
    agg = WindowAggregator("r", 100)
    eps = [ep(1.0, 1000, credits=100.0, overheat_ticks=30, ticks=1000),
           ep(2.0, 10, credits=300.0, overheat_ticks=2, ticks=10),
           ep(3.0, 10, overheat_ticks=1, ticks=10)]  # no credits key: not counted for credits
    (row,) = agg.add_round(100, 0.0, eps, None, 2.0)
    assert row["credits_mean"] == pytest.approx(200.0)
    assert row["overheat_ticks_mean"] == pytest.approx(11.0)
    assert row["ticks_mean"] == pytest.approx(340.0)
    assert "terminated_mean" not in row and "episode_return_mean" not in row


def test_learner_metrics_averaged_over_rounds_that_had_them():
    agg = WindowAggregator("r", 100)
    lm = lambda pl, lr: {"policy_loss": pl, "value_loss": 2 * pl, "entropy": 1.0, "approx_kl": 0.01,
                         "clipfrac": 0.1, "explained_variance": 0.5, "learning_rate": lr}
    agg.add_round(40, 0.0, [], lm(1.0, 3e-4), 1.0)
    agg.add_round(40, 0.0, [], None, 1.0)
    (row,) = agg.add_round(40, 0.0, [], lm(3.0, 2e-4), 1.0)
    assert row["policy_loss"] == pytest.approx(2.0) and row["value_loss"] == pytest.approx(4.0)
    assert row["learning_rate"] == 2e-4
    rand = WindowAggregator("r", 100)
    (row,) = rand.add_round(100, 1.0, [], None, 1.0)
    assert all(row[k] is None for k in LOSS_KEYS) and row["learning_rate"] is None


def test_sps_wall_time_and_extra_scalars():
    clock = FakeClock()
    agg = WindowAggregator("r", 100, clock=clock)
    agg.add_round(50, 0.0, [], None, 2.0, extra={"policy_lag": 1})
    clock.t += 7.5
    (row,) = agg.add_round(50, 0.0, [], None, 3.0, extra={"policy_lag": 2})
    assert row["sps"] == pytest.approx(100 / 5.0)
    assert row["wall_time_s"] == pytest.approx(7.5)
    assert row["policy_lag"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        agg.add_round(1, 0.0, [], None, 1.0, extra={"sps": 3})


def test_row_has_exactly_the_contract_fields():
    agg = WindowAggregator("run-x", 10)
    (row,) = agg.add_round(10, 1.0, [ep(1.0, 10, credits=5)], None, 1.0)
    assert list(row) == [
        "run_id", "window_id", "window_complete", "env_steps_start", "env_steps_end",
        "env_steps_in_window", "env_steps_total", "episodes_completed", "terminated_episodes",
        "truncated_episodes", "reward_sum", "reward_mean", "return_mean", "episode_length_mean",
        "credits_mean", *LOSS_KEYS, "learning_rate", "sps", "wall_time_s"]
    assert row["run_id"] == "run-x"


def test_flush_partial():
    agg = WindowAggregator("r", 100)
    assert agg.flush_partial() is None
    feed(agg, 3)  # closes window 0 at 120
    assert agg.flush_partial() is None  # nothing since the close
    agg.add_round(40, 2.0, [ep(5.0, 3)], None, 1.0)
    part = agg.flush_partial()
    assert part["window_complete"] is False and part["window_id"] == 1
    steps = (part["env_steps_start"], part["env_steps_end"], part["env_steps_in_window"])
    assert steps == (120, 160, 40)
    assert part["return_mean"] == 5.0
    assert agg.flush_partial() is None and agg.next_window_id == 2


def test_values_are_json_safe():
    agg = WindowAggregator("r", 10)
    eps = [ep(np.float32(2.0), np.int64(4), terminated=np.bool_(True), credits=float("nan")),
           ep(float("nan"), 6, credits=np.float64(3.0))]
    (row,) = agg.add_round(np.int64(10), float("nan"), eps, {"policy_loss": float("inf")}, 0.0)
    json.dumps(row, allow_nan=False)
    assert row["reward_sum"] is None and row["reward_mean"] is None
    assert row["return_mean"] == 2.0 and type(row["return_mean"]) is float
    assert row["credits_mean"] == 3.0 and row["policy_loss"] is None and row["sps"] is None
    assert type(row["env_steps_total"]) is int and row["terminated_episodes"] == 2


def test_bad_arguments():
    with pytest.raises(ValueError):
        WindowAggregator("r", 0)
    agg = WindowAggregator("r", 10)
    with pytest.raises(ValueError):
        agg.add_round(-1, 0.0, [], None, 1.0)
    with pytest.raises(ValueError, match="reward"):
        agg.add_round(1, 0.0, [ep(1.0, 1, reward=3.0)], None, 1.0)

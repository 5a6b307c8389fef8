"""Rollout collection without Ray: per-env episode accounting, dummy steps, bootstrap values."""

import numpy as np
import pytest
import torch

from training.envs.registry import EnvSpecError, check_env_spec, make_vecenv
from training.rollout import EnvOutputError, RolloutCollector


class ConstantValuePolicy(torch.nn.Module):
    """Always action 1; value = 10 * first observation feature (so bootstrap values are checkable)."""

    def values(self, obs):
        return 10.0 * obs[:, 0]

    def act(self, obs, deterministic=False, generator=None, with_value=True):
        n = obs.shape[0]
        return torch.ones(n, dtype=torch.int64), torch.zeros(n), 10.0 * obs[:, 0]


def test_native_env_episode_accounting_and_truncation_bootstrap():
    env = make_vecenv("training.envs.examples:countdown", 4, seed=0)
    col = RolloutCollector(env, rollout_steps=12, seed=0, policy=ConstantValuePolicy())
    batch, episodes = col.collect()
    assert batch["obs"].shape == (12, 4, 2) and batch["actions"].shape == (12, 4)
    assert batch["valid"].all()  # native envs reset inside the step: no dummy transitions
    # env 0: length 5, terminal at steps 4 and 9, reward 0 (action 1 != 0)
    assert np.flatnonzero(batch["terminals"][:, 0]).tolist() == [4, 9]
    # env 1: length 6, truncated at steps 5 and 11; reward 1 every step
    assert np.flatnonzero(batch["truncations"][:, 1]).tolist() == [5, 11]
    # bootstrap = value of the final observation (0 steps left -> 10 * 0 = 0); not the reset obs (10 * 1.2)
    assert batch["bootstrap_values"][5, 1] == pytest.approx(0.0)
    returns = {(e["terminated"], e["episode_length"], e["episode_return"]) for e in episodes}
    assert (1, 5, 0.0) in returns and (0, 6, 6.0) in returns
    # env-specific info is merged into the episode of the env it belongs to
    assert {e["score"] for e in episodes if e["episode_length"] == 7} == {7.0}
    assert len(episodes) == 2 + 2 + 1 + 2  # envs 0..3 with lengths 5, 6, 7, 5 in 12 steps
    assert batch["last_values"].shape == (4,)


def test_emulated_gym_env_marks_reset_step_invalid_and_counts_returns():
    env = make_vecenv("gym:CartPole-v1", 2, seed=0)
    col = RolloutCollector(env, rollout_steps=300, seed=0, policy=None)
    batch, episodes = col.collect()
    assert episodes, "random CartPole episodes end within 300 steps"
    done = batch["terminals"] | batch["truncations"]
    t, i = np.nonzero(done[:-1])
    assert not batch["valid"][t + 1, i].any(), "the step after a done is PufferLib's reset step"
    assert batch["valid"].sum() == batch["valid"].size - len(t)
    for ep in episodes:  # CartPole pays 1 per real step, so return == length
        assert ep["episode_return"] == ep["episode_length"]
    # bootstrap for emulated envs is the next step's value (of the final observation)
    assert np.array_equal(batch["bootstrap_values"][:-1], batch["values"][1:])


def test_env_output_errors_name_env_and_field():
    col = RolloutCollector(make_vecenv("training.envs.examples:countdown_nan", 2, 0), 3, 0,
                           env_name="training.envs.examples:countdown_nan")
    with pytest.raises(EnvOutputError, match=r"countdown_nan.*reward"):
        col.collect()
    col = RolloutCollector(make_vecenv("training.envs.examples:countdown_bad_shape", 2, 0), 3, 0, env_name="bad")
    with pytest.raises(EnvOutputError, match=r"'bad'.*observation has shape \(2, 1\)"):
        col.collect()


def test_random_actions_are_seeded():
    a = RolloutCollector(make_vecenv("gym:CartPole-v1", 2, seed=0), 20, seed=5).collect()[0]["actions"]
    b = RolloutCollector(make_vecenv("gym:CartPole-v1", 2, seed=0), 20, seed=5).collect()[0]["actions"]
    assert np.array_equal(a, b)


@pytest.mark.parametrize("spec", ["nonsense", "gym:NoSuchEnv-v0", "no_such_module:make", "training.envs.examples:nope"])
def test_bad_env_spec(spec):
    with pytest.raises(EnvSpecError, match="--env"):
        check_env_spec(spec)


@pytest.mark.parametrize("spec, act_shape, dtype", [
    ("gym:CartPole-v1", (), np.int64),                                    # Discrete
    ("training.envs.examples:multi_countdown", (2,), np.int64),           # MultiDiscrete
    ("gym:Pendulum-v1", (1,), np.float32),                                # Box
])
def test_collect_and_learn_for_each_action_space(spec, act_shape, dtype):
    from training.config import config_from_args
    from training.learner import PPOLearner
    from training.agent import build_agent, set_weights
    from training.envs.env_info import EnvInfo

    cfg = config_from_args({"env": spec, "total_env_steps": 1000, "window_env_steps": 500, "ppo_num_envs": 4,
                            "ppo_num_workers": 1, "ppo_rollout_steps": 16, "ppo_num_minibatches": 2})
    env = make_vecenv(spec, 4, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env))
    policy = build_agent(learner.policy_spec, EnvInfo.of(env))
    set_weights(policy, learner.weights())
    before = {k: v.copy() for k, v in learner.weights().items()}
    batch, _ = RolloutCollector(env, 16, 0, policy=policy).collect()
    assert batch["actions"].shape == (16, 4, *act_shape) and batch["actions"].dtype == dtype
    metrics = learner.learn([batch])
    assert np.isfinite(metrics["policy_loss"]) and metrics["num_minibatch_updates"] == cfg.ppo_update_epochs * 2
    assert any(not np.array_equal(before[k], v) for k, v in learner.weights().items())


def test_overlapped_mode_runner_skips_the_critic_only_where_values_are_unused():
    """step_values=False (overlapped mode: the learner re-evaluates values) leaves actions,
    log-probs and bootstrap values as they were and only zeroes the per-step values; an emulated
    env, whose bootstrap uses the next step's value, keeps computing them."""
    from training.agent import mlp_agent

    def collect(spec, step_values):
        env = make_vecenv(spec, 8, seed=3)
        torch.manual_seed(0)
        policy = mlp_agent(env.single_observation_space, env.single_action_space, hidden=(16, 16))
        batch, _ = RolloutCollector(env, 24, seed=3, policy=policy, step_values=step_values).collect()
        return batch

    full, lean = collect("prospector", True), collect("prospector", False)
    for key in ("obs", "actions", "logprobs", "rewards", "bootstrap_values", "last_values"):
        np.testing.assert_array_equal(full[key], lean[key], err_msg=key)
    assert np.all(lean["values"] == 0) and np.any(full["values"] != 0)
    gym = collect("gym:CartPole-v1", False)
    assert np.any(gym["values"] != 0)


def test_teacher_driven_rollout_plays_the_teachers_actions():
    """teach="drive" (the kickstarting warm-up): the teacher plays, its actions are the recorded
    ones, and the trajectory is the teacher's own: the same as letting the bot play the env."""
    from prospector_game.bots import BOTS
    from training.agent import mlp_agent

    teacher = BOTS["cautious_scanner"]
    env = make_vecenv("prospector", 8, seed=5)
    torch.manual_seed(0)
    policy = mlp_agent(env.single_observation_space, env.single_action_space, hidden=(16, 16))
    batch, _ = RolloutCollector(env, 40, seed=5, policy=policy, teacher=teacher).collect(teach="drive")
    assert batch["driven"] is True
    np.testing.assert_array_equal(batch["actions"], batch["teacher_actions"])
    bot_env = make_vecenv("prospector", 8, seed=5)
    obs, _ = bot_env.reset(seed=5)
    for t in range(40):
        np.testing.assert_array_equal(batch["obs"][t], obs, err_msg=f"step {t}")
        obs, *_ = bot_env.step(teacher(obs))
    labelled, _ = RolloutCollector(make_vecenv("prospector", 8, seed=5), 40, seed=5, policy=policy,
                                   teacher=teacher).collect(teach=True)
    assert "driven" not in labelled and not np.array_equal(labelled["actions"], labelled["teacher_actions"])


@pytest.mark.parametrize("prob", [1.0, 0.5])
def test_rollins_let_the_teacher_play_the_first_drawn_decisions_of_every_episode(prob):
    """Roll-ins: each episode's first h decisions are the teacher's, h drawn uniformly from
    0..rollin_max, and set to 0 unless a uniform draw falls below the roll-in probability (one
    draw per env at the start, then one per finished env, in env order, from the collector's own
    stream). Those steps are marked, carry the teacher's action and log-prob 0, and each finished
    episode reports how many of its decisions the teacher played."""
    env = make_vecenv("training.envs.examples:countdown", 4, seed=0)  # episodes of 5, 6, 7, 5 steps
    teacher = lambda obs: np.zeros(len(obs), dtype=np.int64)  # noqa: E731  (the policy always plays 1)
    class Policy(ConstantValuePolicy):  # log-prob -0.5 for its own action, so the teacher's 0 shows
        def act(self, obs, deterministic=False, generator=None, with_value=True):
            action, _, value = super().act(obs)
            return action, torch.full((obs.shape[0],), -0.5), value

    col = RolloutCollector(env, rollout_steps=30, seed=3, policy=Policy(), teacher=teacher,
                           rollin_max=4, rollin_prob=prob)
    batch, episodes = col.collect(teach=True)
    played = batch["teacher_played"]
    np.testing.assert_array_equal(played, batch["actions"] == 0)
    np.testing.assert_array_equal(batch["logprobs"], np.where(played, 0.0, -0.5))

    rng = np.random.default_rng([3, 0x5EED])  # the reference: replay the draws by hand

    def draw(n):
        h = rng.integers(0, 5, size=n)
        return h if prob == 1.0 else np.where(rng.random(n) < prob, h, 0)

    left = draw(4)
    expected = np.zeros((30, 4), dtype=bool)
    expected_eps = []
    lengths = [5, 6, 7, 5]
    step_in_episode = np.zeros(4, dtype=np.int64)
    for t in range(30):
        expected[t] = left > 0
        left = left - expected[t]
        step_in_episode += 1
        done = step_in_episode == lengths
        for i in np.flatnonzero(done):
            expected_eps.append((i, int(expected[t - lengths[i] + 1:t + 1, i].sum())))
        step_in_episode[done] = 0
        left[done] = draw(int(done.sum()))
    np.testing.assert_array_equal(played, expected)
    assert 0 < played.mean() < 1
    assert sorted(e["teacher_decisions"] for e in episodes) == sorted(d for _, d in expected_eps)

    plain, _ = RolloutCollector(make_vecenv("training.envs.examples:countdown", 4, seed=0), 30, seed=3,
                                        policy=ConstantValuePolicy(), teacher=teacher, rollin_max=4).collect(teach=False)
    assert "teacher_played" not in plain and (plain["actions"] == 1).all()  # no roll-ins once the teacher is off


def test_rollin_state_survives_a_checkpoint():
    """An exact resume continues the roll-ins where they were: the restored collector's next
    round equals the original's, teacher-played steps included."""
    from prospector_game.bots import BOTS
    from training.agent import mlp_agent

    def collector():
        env = make_vecenv("prospector", 4, seed=9)
        torch.manual_seed(0)
        policy = mlp_agent(env.single_observation_space, env.single_action_space, hidden=(16, 16))
        return RolloutCollector(env, 16, seed=9, policy=policy, teacher=BOTS["cautious_scanner"], rollin_max=24)

    first = collector()
    first.collect(teach=True)
    state = first.state_dict()
    expected, _ = first.collect(teach=True)
    resumed = collector()
    assert resumed.load_state_dict(state)
    got, _ = resumed.collect(teach=True)
    assert expected["teacher_played"].any() and not expected["teacher_played"].all()
    for key in ("teacher_played", "actions", "obs"):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)

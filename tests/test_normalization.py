"""Observation normalisation, reward scaling, the Gaussian policy's clipped actions and the
per-space defaults (issue: defaults that learn continuous control)."""

import numpy as np
import pytest
import torch

from training.agent import build_agent, get_weights, set_weights
from training.config import SPACE_DEFAULTS, config_from_args
from training.envs.env_info import EnvInfo
from training.envs.registry import make_vecenv
from training.learner import PPOLearner
from training.normalization import Moments, ObsNormalizer, RewardScaler
from training.rollout import RolloutCollector

REACH = "training.envs.examples:reach"


# ------------------------------------------------------------------ statistics
def test_moments_merge_equals_one_pass_over_all_rows():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(loc=5.0, scale=3.0, size=(n, 3)) for n in (7, 1, 30))
    merged = Moments.of(a).merge(Moments.of(b)).merge(Moments.of(c))
    regrouped = Moments.of(a).merge(Moments.of(b).merge(Moments.of(c)))
    rows = np.concatenate([a, b, c])
    for m in (merged, regrouped):
        assert m.count == 38
        np.testing.assert_allclose(m.mean, rows.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.var, rows.var(0), rtol=1e-12)


def test_moments_of_a_rollout_keep_only_valid_rows():
    obs = np.arange(12, dtype=np.float32).reshape(3, 2, 2)  # (T, N, obs)
    valid = np.array([[True, False], [True, True], [False, True]])
    m = Moments.of(obs, valid)
    rows = np.array([[0, 1], [4, 5], [6, 7], [10, 11]], dtype=np.float64)
    assert m.count == 4
    np.testing.assert_array_equal(m.mean, rows.mean(0))
    np.testing.assert_array_equal(m.var, rows.var(0))


def test_obs_normalizer_by_hand():
    norm = ObsNormalizer((2,))
    norm.update(Moments(4.0, np.array([10.0, -1.0]), np.array([4.0, 0.25])))
    out = norm(torch.tensor([[12.0, -1.0], [10.0, 100.0]]))
    # (12 - 10) / 2 = 1; (-1 - -1) / 0.5 = 0; 0; (100 + 1) / 0.5 = 202 -> clipped to 10
    torch.testing.assert_close(out, torch.tensor([[1.0, 0.0], [0.0, 10.0]]), atol=1e-6, rtol=0)


def test_reward_scaler_follows_the_vecnormalize_rule_by_hand():
    """Two envs, gamma 0.5. Discounted returns per step: env 0: 1, 1.5, (episode ends) ... env 1:
    2, 1 (invalid step: unchanged, not counted), 2.5. Rewards are divided by the std of every
    counted return so far, then clipped to +-10."""
    scaler = RewardScaler(gamma=0.5)
    rewards = np.array([[1.0, 2.0], [1.0, 9.0], [4.0, 1.5]], dtype=np.float32)
    dones = np.array([[False, False], [True, False], [False, False]])
    valid = np.array([[True, True], [True, False], [True, True]])
    out = scaler.scale(rewards, dones, valid)
    returns = np.array([1.0, 2.0, 1.5, 4.0, 2.0 * 0.5 + 1.5])  # env 0 restarts after its episode end
    std = np.sqrt(returns.var() + 1e-8)
    np.testing.assert_allclose(out, np.clip(rewards / std, -10, 10), rtol=1e-6)
    np.testing.assert_allclose(scaler.returns, [4.0, 2.5])
    assert scaler.stats.count == 5


# ------------------------------------------------------------------ learner
def _reach_learner(seed=0, **flags):
    cfg = config_from_args({"env": REACH, "total_env_steps": 4096, "window_env_steps": 1024, "ppo_num_envs": 4,
                            "ppo_num_workers": 1, "ppo_rollout_steps": 16, "ppo_num_minibatches": 2,
                            "ppo_update_epochs": 2, "seed": seed, **flags})
    return cfg, PPOLearner(cfg, EnvInfo.of(make_vecenv(cfg.env, 4, seed=0)))


def _rollouts(learner, n=2, seed=0):
    """``n`` runners' rollouts of the reach env with the learner's current weights."""
    out = []
    for i in range(n):
        env = make_vecenv(REACH, 4, seed=seed + i)
        behaviour = build_agent(learner.policy_spec, EnvInfo.of(env))
        set_weights(behaviour, learner.weights())
        out.append(RolloutCollector(env, 16, seed + i, policy=behaviour).collect()[0])
    return out


def test_continuous_defaults_switch_normalisation_on_and_presets_keep_theirs():
    cfg = config_from_args({"env": REACH})
    assert cfg.ppo_norm_obs and cfg.ppo_norm_reward
    assert {k: getattr(cfg, k) for k in SPACE_DEFAULTS["box"]} == SPACE_DEFAULTS["box"]
    assert not config_from_args({"env": REACH, "ppo_norm_obs": False}).ppo_norm_obs  # a flag wins
    for env in ("prospector", "gym:CartPole-v1", "training.envs.examples:countdown"):
        cfg = config_from_args({"env": env})
        assert not cfg.ppo_norm_obs and not cfg.ppo_norm_reward, env
    assert config_from_args({"env": "training.envs.examples:countdown"}).ppo_rollout_steps == 128  # global


def test_learner_merges_every_runners_observations_after_its_update():
    _, learner = _reach_learner()
    assert learner.policy.obs_norm is not None and float(learner.policy.obs_norm.count) == 0
    rollouts = _rollouts(learner, n=2)
    before = get_weights(learner.policy)
    learner.learn(rollouts)
    rows = np.concatenate([r["obs"][r["valid"]] for r in rollouts]).astype(np.float64)
    norm = learner.policy.obs_norm
    assert float(norm.count) == len(rows) == 2 * 16 * 4
    np.testing.assert_allclose(norm.mean.numpy(), rows.mean(0), rtol=1e-10)
    np.testing.assert_allclose(norm.var.numpy(), rows.var(0), rtol=1e-10)
    # the statistics travel with the weights (to the runners, checkpoints, eval)
    weights = learner.weights()
    np.testing.assert_array_equal(weights["obs_norm.mean"], norm.mean.numpy())
    assert float(before["obs_norm.count"]) == 0


def test_first_update_sees_observations_as_the_runners_did(monkeypatch):
    """The update runs before the new statistics are merged, so the re-evaluated log-probs of the
    first minibatch equal the runners' (ratio 1), normalisation included."""
    import training.learner as learner_module

    _, learner = _reach_learner()
    rollouts = _rollouts(learner, n=1, seed=9)  # the batch's statistics are far from the start's
    seen = {}

    def spy(policy, optimizer, batch, **kw):
        with torch.no_grad():
            params, _ = policy(batch["obs"])
            seen["logprob"] = policy.logprob_entropy(params, batch["actions"])[0]
        seen["behaviour"] = batch["logprobs"]
        return {"policy_loss": 0.0}

    monkeypatch.setattr(learner_module, "ppo_update", spy)
    learner.learn(rollouts)
    torch.testing.assert_close(seen["logprob"], seen["behaviour"], atol=1e-5, rtol=1e-5)


def test_normalisation_state_survives_a_resume_exactly():
    _, a = _reach_learner()
    first = _rollouts(a, n=2)
    a.learn(first)
    state = a.state_dict()
    _, b = _reach_learner(seed=3)  # different init: everything must come from the state
    b.load_state_dict(state)
    assert b.reward_scaler.stats.count == a.reward_scaler.stats.count
    np.testing.assert_array_equal(b.reward_scaler.stats.var, a.reward_scaler.stats.var)
    np.testing.assert_array_equal(b.reward_scaler.returns, a.reward_scaler.returns)
    second = _rollouts(a, n=2, seed=20)
    torch.manual_seed(1)
    ma = a.learn(second)
    torch.manual_seed(1)
    mb = b.learn(second)
    assert ma == mb
    for key, value in a.weights().items():
        np.testing.assert_array_equal(value, b.weights()[key], err_msg=key)


def test_reward_scaling_is_for_learning_only():
    """The learner scales a copy: the rollout it was given (and so what runners report) keeps the
    raw rewards, while the value targets it learns are in the scaled units."""
    _, learner = _reach_learner()
    rollouts = _rollouts(learner, n=1)
    raw = rollouts[0]["rewards"].copy()
    learner.learn(rollouts)
    np.testing.assert_array_equal(rollouts[0]["rewards"], raw)
    assert learner.reward_scaler.stats.count == raw.size


# ------------------------------------------------------------------ Gaussian policy
def test_runner_sends_clipped_actions_and_keeps_the_sampled_ones_log_prob():
    """A policy whose mean is far outside the bounds: the env receives actions clipped to [-1, 1],
    the batch records the unclipped sample, and its log-prob is the Gaussian's at that sample (the
    reference implementations' rule), not at the clipped action."""
    env = make_vecenv(REACH, 4, seed=0)
    info = EnvInfo.of(env)
    agent = build_agent({"version": 2, "factory": "training.policy:MLPPolicy", "kwargs": {"hidden": [8]}}, info)
    with torch.no_grad():
        agent.policy.actor[-1].bias.fill_(5.0)  # mean ~5
        agent.policy.actor_logstd.fill_(-1.0)
    collector = RolloutCollector(env, 4, seed=0, policy=agent)
    batch, _ = collector.collect()
    sent = env.actions_seen
    assert np.all(batch["actions"] > 2.0)  # the samples: mean 5, std 0.37
    np.testing.assert_array_equal(sent, np.clip(batch["actions"][-1], -1.0, 1.0))
    obs = torch.as_tensor(batch["obs"].reshape(16, 2))
    actions = torch.as_tensor(batch["actions"].reshape(16, 1))
    with torch.no_grad():
        logprob, _, _ = agent.evaluate(obs, actions)
        clipped_logprob, _, _ = agent.evaluate(obs, actions.clamp(-1, 1))
    np.testing.assert_allclose(batch["logprobs"].reshape(-1), logprob.numpy(), rtol=1e-5)
    assert np.all(np.abs(batch["logprobs"].reshape(-1) - clipped_logprob.numpy()) > 1.0)


def test_gaussian_log_std_is_one_learned_parameter_starting_where_asked():
    info = EnvInfo.of(make_vecenv(REACH, 2, seed=0))
    agent = build_agent({"version": 2, "factory": "training.policy:MLPPolicy",
                         "kwargs": {"hidden": [8], "log_std_init": -0.5}}, info)
    logstd = agent.policy.actor_logstd
    assert logstd.requires_grad and logstd.shape == (1, 1) and float(logstd.detach()) == -0.5
    mean, log_std = agent.forward_eval(torch.randn(5, 2))[0]
    torch.testing.assert_close(log_std, torch.full((5, 1), -0.5))  # the same for every state


def test_obs_norm_needs_float_box_observations():
    from gymnasium import spaces

    info = EnvInfo(spaces.Box(0, 255, (4,), np.uint8), spaces.Discrete(2))  # pixels: not normalised
    spec = {"version": 2, "factory": "training.policy:MLPPolicy", "kwargs": {"hidden": [8]}, "obs_norm": True}
    with pytest.raises(TypeError, match="--ppo-norm-obs"):
        build_agent(spec, info)
    spec.pop("obs_norm")
    assert build_agent(spec, info).obs_norm is None

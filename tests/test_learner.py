"""The learner core without Ray: V-trace correction in overlapped mode, exact state round-trips."""

import numpy as np
import torch

from training.config import config_from_args
from training.envs.registry import make_vecenv
from training.learner import PPOLearner
from training.policy import policy_from_spec, set_weights
from training.rollout import RolloutCollector


def setup(seed=0):
    cfg = config_from_args({"env": "gym:CartPole-v1", "total_env_steps": 4096, "window_env_steps": 1024,
                            "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 32,
                            "ppo_update_epochs": 2, "ppo_num_minibatches": 2, "seed": seed})
    env = make_vecenv(cfg.env, 4, seed=0)
    learner = PPOLearner(cfg, env.single_observation_space, env.single_action_space)
    behaviour = policy_from_spec(learner.policy_spec)
    set_weights(behaviour, learner.weights())
    return cfg, env, learner, behaviour


def test_off_policy_update_equals_on_policy_when_weights_match():
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    _, _, b, _ = setup()
    ma = a.learn([batch], off_policy=False)
    mb = b.learn([batch], off_policy=True)  # ratios are exactly 1: V-trace reduces to GAE
    for key in ("policy_loss", "value_loss", "approx_kl"):
        assert np.isclose(ma[key], mb[key], rtol=1e-5, atol=1e-7), key
    for k, v in a.weights().items():
        assert np.allclose(v, b.weights()[k], atol=1e-6)


def test_off_policy_correction_differs_for_stale_data():
    _, env, learner, behaviour = setup()
    stale, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    learner.learn([stale])  # the learner moves on; `stale` now lags one version
    _, _, twin, _ = setup()
    twin.load_state_dict(learner.state_dict())
    on = learner.learn([stale], off_policy=False)
    off = twin.learn([stale], off_policy=True)
    assert not np.isclose(on["value_loss"], off["value_loss"]), "V-trace must use the current policy's ratios"


def test_state_dict_round_trip_gives_identical_updates():
    _, env, a, behaviour = setup()
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    a.learn([batch])
    state = a.state_dict()
    _, _, b, _ = setup(seed=7)  # different init and RNG: everything must come from the state
    b.load_state_dict(state)
    torch.manual_seed(123)
    ma = a.learn([batch])
    mb = b.learn([batch])
    assert ma == mb

"""Non-finite values in an update: the minibatch is skipped and counted, a run of them fails the run
naming the likely causes, and non-finite weights never reach a checkpoint (training/learner.py)."""

import numpy as np
import pytest
import torch

from training.agent import build_agent, set_weights
from training.config import config_from_args
from training.envs.env_info import EnvInfo
from training.envs.registry import make_vecenv
from training.learner import MAX_NONFINITE_UPDATES, NonFiniteError, PPOLearner
from training.rollout import RolloutCollector


def setup():
    cfg = config_from_args({"env": "gym:CartPole-v1", "total_env_steps": 4096, "window_env_steps": 1024,
                            "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 32,
                            "ppo_update_epochs": 1, "ppo_num_minibatches": 4, "ppo_norm_reward": False})
    env = make_vecenv(cfg.env, 4, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env))
    behaviour = build_agent(learner.policy_spec, EnvInfo.of(env))
    set_weights(behaviour, learner.weights())
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    return learner, batch


def test_a_nonfinite_minibatch_is_skipped_and_the_others_step():
    """A NaN reward at an env's first step poisons that one row's advantage and return (GAE runs
    backwards from later steps), so the one minibatch holding it has a NaN loss: it takes no step and
    is counted; the others train, and the weights stay finite."""
    learner, batch = setup()
    batch["rewards"][0, 2] = np.nan
    before = learner.weights()
    metrics = learner.learn([batch])
    assert (metrics["nonfinite_minibatches"], metrics["num_minibatch_updates"]) == (1, 3)
    assert learner.weights_finite()
    assert any(not np.array_equal(v, before[k]) for k, v in learner.weights().items())
    assert np.isfinite(metrics["value_loss"])


def test_updates_that_are_all_nonfinite_fail_the_run_after_a_few_in_a_row():
    learner, batch = setup()
    batch["rewards"][:] = np.inf
    for _ in range(MAX_NONFINITE_UPDATES - 1):
        assert learner.learn([dict(batch)])["num_minibatch_updates"] == 0
    with pytest.raises(NonFiniteError, match="last 3 updates.*likely causes: a learning rate too high"):
        learner.learn([dict(batch)])


def test_a_good_update_resets_the_count():
    learner, batch = setup()
    bad = {**batch, "rewards": np.full_like(batch["rewards"], np.inf)}
    for _ in range(MAX_NONFINITE_UPDATES - 1):
        learner.learn([dict(bad)])
    learner.learn([dict(batch)])
    learner.learn([dict(bad)])
    assert learner.nonfinite_streak == 1


def test_nonfinite_weights_are_never_checkpointed():
    learner, _ = setup()
    with torch.no_grad():
        next(learner.policy.parameters())[0] = float("nan")
    with pytest.raises(NonFiniteError, match="no checkpoint written"):
        learner.state_dict()

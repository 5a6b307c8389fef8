"""A small policy, optimizer and flat batch for tests/test_device_step.py."""

import numpy as np
import torch

from training.adam import Adam
from training.agent import build_agent, make_spec
from training.config import config_from_args
from training.envs.env_info import EnvInfo
from training.envs.registry import make_vecenv
from training.rollout import RolloutCollector


def small_learner_batch():
    cfg = config_from_args({"env": "gym:CartPole-v1", "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 32})
    env = make_vecenv(cfg.env, 4, seed=0)
    torch.manual_seed(0)
    policy = build_agent(make_spec(cfg), EnvInfo.of(env))
    raw, _ = RolloutCollector(env, 32, 0, policy=policy).collect()
    env.close()
    flat = lambda x, dtype=None: torch.as_tensor(np.ascontiguousarray(x).reshape(128, *x.shape[2:]), dtype=dtype)  # noqa: E731
    batch = dict(obs=flat(raw["obs"]), actions=flat(raw["actions"]), logprobs=flat(raw["logprobs"]),
                 values=flat(raw["values"]), advantages=flat(raw["rewards"]), returns=flat(raw["rewards"]),
                 valid=flat(raw["valid"], torch.float32))
    return policy, Adam(policy.parameters(), lr=1e-3), batch

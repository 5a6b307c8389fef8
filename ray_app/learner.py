"""Learner actor: wraps the Ray-free PPOLearner on CPU or CUDA."""

from __future__ import annotations

import ray

from ray_app.placement import set_torch_threads
from training.config import TrainConfig
from training.learner import PPOLearner


class Learner:
    def __init__(self, cfg_dict: dict, obs_space, act_space, device: str):
        self.threads = set_torch_threads()
        self.core = PPOLearner(TrainConfig.from_dict(cfg_dict), obs_space, act_space, device=device)

    def policy_spec(self) -> dict:
        return self.core.policy_spec

    def get_weights(self) -> dict:
        return self.core.weights()

    @ray.method(num_returns=2)
    def learn(self, *rollouts):
        """Rollouts arrive resolved (zero-copy views of the object store). Returns (losses, new
        weights); the weights become one object that every runner reads."""
        metrics = self.core.learn(list(rollouts))
        return metrics, self.core.weights()

    def state_dict(self) -> dict:
        return self.core.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.core.load_state_dict(state)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


RemoteLearner = ray.remote(Learner)

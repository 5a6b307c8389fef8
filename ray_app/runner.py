"""Env runner actor: one PufferLib vector env plus an inference-only CPU copy of the policy.

The driver imports this module only to create the actors, so everything that loads torch or
PufferLib (the env, the policy, the collector) is imported inside the actor's methods: the
driver's process stays free of both (README, "Layout").
"""

from __future__ import annotations

import os

import numpy as np
import ray
from ray.exceptions import RayActorError

from ray_app.placement import set_torch_threads
from training.config import TrainConfig
from training.faults import maybe_fail, parse_faults

# Seed offset between incarnations of one runner slot: a replacement must not replay the lost
# runner's episodes, yet its seeds must follow from (seed, index, incarnation) alone.
INCARNATION_SEED_STRIDE = 1_000_003


class EnvRunner:
    """Runner ``index`` hosts envs ``index*k .. index*k+k-1`` of the run; env j plays seed
    ``seed + j`` (plus a fixed offset per replacement), so the envs' streams do not depend on how
    they are split over runners."""

    def __init__(self, cfg_dict: dict, index: int, incarnation: int = 0):
        from training.agent import load_behaviour
        from training.envs.plugin import behaviour_ref
        from training.envs.registry import make_vecenv
        from training.rollout import RolloutCollector

        self.threads = set_torch_threads()
        cfg = TrainConfig.from_dict(cfg_dict)
        self.index = index
        self.incarnation = incarnation
        self.faults = parse_faults(cfg.fault_inject)
        self.calls = 0
        n = cfg.envs_per_worker
        first_seed = cfg.seed + index * n + incarnation * INCARNATION_SEED_STRIDE
        self.env, self.build_error = None, None
        try:
            self.env = make_vecenv(cfg.env, n, seed=first_seed, rules=cfg.env_rules, time_max=cfg.env_time_max,
                                   kwargs=cfg.env_kwargs, vector_backend=cfg.ppo_vector_backend)
        except Exception as e:  # noqa: BLE001 - raised again by env_info: an error of an actor's creation
            self.build_error = e  # reaches the driver as text only, a method's error as itself
            return
        teacher = None
        if cfg.kickstart_teacher:
            teacher = load_behaviour(behaviour_ref(cfg.kickstart_teacher, cfg.env, "--kickstart-teacher"),
                                     "--kickstart-teacher")
        # overlapped mode: the learner computes the values itself (V-trace), so the critic is skipped here
        self.collector = RolloutCollector(self.env, cfg.ppo_rollout_steps, seed=first_seed, env_name=cfg.env,
                                          teacher=teacher, step_values=not cfg.async_rollouts,
                                          rollin_max=cfg.kickstart_rollin_steps,
                                          rollin_prob=cfg.kickstart_rollin_prob, device=cfg.runner_device)
        self.learns = cfg.trainer_backend == "puffer_ppo"
        self.version = -1
        # a multi-agent env holds several rows (agents) per env; env steps count envs, not rows
        self.agents_per_env = int(getattr(self.env, "num_agents_per_env", 1))

    def env_info(self):
        """What the policy factory sees of the env (``training.envs.env_info.EnvInfo``)."""
        from training.envs.env_info import EnvInfo

        if self.build_error is not None:
            raise self.build_error
        return EnvInfo.of(self.env)

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    def parent_pid(self) -> int:
        """The pid of the process that started this worker: its node's raylet (``ray_app.chaos``)."""
        return os.getppid()

    @ray.method(num_returns=2)
    def collect(self, weights: dict | None, version: int, policy_spec: dict | None, teach: bool | str = False,
                steps: int | None = None):
        """One rollout of ``steps`` vector steps (default: --ppo-rollout-steps) with weights
        ``version``. Returns (arrays for the learner, small summary for the driver); the random
        backend sends no arrays at all. The summary's ``step_rewards`` (the valid rewards summed
        per vector step) and each episode's ``_step`` let the driver close windows at the vector
        step where they end."""
        self.calls += 1
        maybe_fail(self.faults, "runner", self.index, self.calls, self.incarnation)
        if self.learns and version != self.version:
            from training.agent import build_agent, set_weights
            from training.envs.env_info import EnvInfo

            if self.collector.policy is None:
                # --runner-device: the policy acts there (Ray's num_gpus share made CUDA visible)
                self.collector.policy = build_agent(policy_spec, EnvInfo.of(self.env)).to(self.collector.device)
            set_weights(self.collector.policy, weights)
            self.version = version
        batch, episodes = self.collector.collect(teach=teach, steps=steps)
        step_rewards = np.where(batch["valid"], batch["rewards"], 0.0).sum(axis=1, dtype=np.float64)
        summary = dict(
            runner=self.index,
            policy_version=self.version,
            env_steps=int(batch["rewards"].size) // self.agents_per_env,
            reward_sum=float(step_rewards.sum()),
            step_rewards=step_rewards.tolist(),
            episodes=episodes,
            env_reports=self.collector.reports,
        )
        return (batch if self.learns else None), summary

    def state_dict(self) -> dict:
        return self.collector.state_dict()

    def load_state_dict(self, state: dict) -> bool:
        return self.collector.load_state_dict(state)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


RemoteEnvRunner = ray.remote(EnvRunner)


def fetch_states(refs: list | None) -> list[dict] | None:
    """The runners' ``state_dict`` results for a checkpoint, or None if a runner was lost
    meanwhile (the pool replaces it at its next round; that checkpoint then resumes exact in
    accounting, not in trajectories)."""
    if refs is None:
        return None
    try:
        return ray.get(list(refs))
    except RayActorError:
        return None

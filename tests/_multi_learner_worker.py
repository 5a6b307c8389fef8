"""One learner of tests/test_multi_learner.py's data-parallel group (a process of its own):

    python tests/_multi_learner_worker.py RANK WORLD PORT OUT.npz

Builds the same batch as the test's single learner, trains on its 1/WORLD of the env columns with
gradients summed over the group (gloo, loopback), and writes its weights and metrics."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def setup(num_envs: int = 8, epochs: int = 2, minibatches: int = 4):
    from training.agent import build_agent
    from training.config import config_from_args
    from training.envs.env_info import EnvInfo
    from training.envs.registry import make_vecenv
    from training.rollout import RolloutCollector

    torch.set_num_threads(1)
    cfg = config_from_args({"env": "gym:CartPole-v1", "total_env_steps": 8192, "window_env_steps": 1024,
                            "ppo_num_envs": num_envs, "ppo_num_workers": 1, "ppo_rollout_steps": 32,
                            "ppo_update_epochs": epochs, "ppo_num_minibatches": minibatches, "ppo_learning_rate": 3e-4})
    env = make_vecenv(cfg.env, num_envs, seed=0)
    info = EnvInfo.of(env)
    # the runners' policy: a few random steps away from the learner's, so the ratios are not all 1
    torch.manual_seed(123)  # the same behaviour policy in every process, whatever ran there before
    behaviour = build_agent(build_agent_spec(cfg), info)
    with torch.no_grad():
        for p in behaviour.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch, _ = RolloutCollector(env, 32, 0, policy=behaviour).collect()
    env.close()
    return cfg, info, batch


def build_agent_spec(cfg):
    from training.agent import make_spec

    return make_spec(cfg)


def main() -> int:
    from training.distributed import DataParallel
    from training.learner import PPOLearner

    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    cfg, info, batch = setup()
    dp = DataParallel.join(rank, world, "127.0.0.1", port, timeout_s=60)
    learner = PPOLearner(cfg, info, data_parallel=dp)
    share = cfg.ppo_num_envs // world
    metrics = [learner.learn([dict(batch)], columns=(rank * share, (rank + 1) * share)) for _ in range(2)]
    np.savez(out, **learner.weights())
    Path(out + ".json").write_text(json.dumps(metrics))
    dp.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())

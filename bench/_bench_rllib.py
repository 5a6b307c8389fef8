"""RLlib PPO (Ray 2.60, default = new API stack: EnvRunners, RLModule, Learner) over the same env
through Gymnasium.

Throughput: R remote env runners with N/R vectorized Gymnasium envs each (Gymnasium's sync vector
env, RLlib's default), rollout_fragment_length T, train batch N*T, minibatch N*T/M, E epochs, the
trainer's PPO hyperparameters, no KL penalty (the trainer has none), the default RLModule with a
256,256 tanh MLP for each of policy and value function (vf_share_layers False, as the trainer's
separate actor and critic), one local learner in the driver process (num_learners 0, the default).
"""

from __future__ import annotations

import time

from bench._bench_ours import steady


def _lifetime_steps(result: dict) -> int:
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    value = result.get(ENV_RUNNER_RESULTS, {}).get(NUM_ENV_STEPS_SAMPLED_LIFETIME)
    if value is None:
        value = result.get(NUM_ENV_STEPS_SAMPLED_LIFETIME, 0)
    return int(value)


def _return_mean(result: dict):
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, EPISODE_RETURN_MEAN

    value = result.get(ENV_RUNNER_RESULTS, {}).get(EPISODE_RETURN_MEAN)
    return None if value is None or value != value else float(value)


def make_prospector(env_config):
    """RLlib calls env creators with its env_config; the class itself takes rules= keywords."""
    from prospector_game.gym_env import ProspectorGymEnv

    return ProspectorGymEnv(rules=env_config.get("rules", "v2"))


def throughput_config(spec: dict):
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    hp, n, r, t = spec["hp"], spec["num_envs"], spec["runners"], spec["rollout"]
    if spec["env_spec"] == "prospector":
        from ray.tune.registry import register_env

        register_env("prospector_gym", make_prospector)  # every env runner builds it from the registry
        env = "prospector_gym"
    else:
        env = spec["env_spec"].removeprefix("gym:")
    batch = n * t
    return (
        PPOConfig()
        .environment(env)
        .env_runners(num_env_runners=r, num_envs_per_env_runner=n // r, rollout_fragment_length=t)
        .training(train_batch_size_per_learner=batch, minibatch_size=batch // spec["minibatches"],
                  num_epochs=spec["epochs"], lr=hp["lr"], gamma=hp["gamma"], lambda_=hp["gae_lambda"],
                  clip_param=hp["clip"], vf_loss_coeff=hp["vf_coef"], entropy_coeff=hp["ent_coef"],
                  grad_clip=hp["max_grad_norm"], use_kl_loss=False)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(spec["hidden"]), fcnet_activation="tanh",
                                                   vf_share_layers=False))
        .debugging(seed=spec["seed"])
    )


def cartpole_config(spec: dict):
    """RLlib's own tuned CartPole PPO example (rllib/tuned_examples/ppo/cartpole_ppo.py): lr 3e-4,
    gamma 0.99, 6 epochs, vf_loss_coeff 0.01, KL loss on, a shared [32] linear torso; RLlib's PPO
    defaults otherwise (train batch 4000, minibatch 128, 2 env runners x 1 env, lambda 1.0)."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return (
        PPOConfig()
        .environment("CartPole-v1")
        .training(gamma=0.99, lr=0.0003, num_epochs=6, vf_loss_coeff=0.01, use_kl_loss=True)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[32], fcnet_activation="linear",
                                                   vf_share_layers=True))
        .debugging(seed=spec["seed"])
    )


def run_rllib(spec: dict, t0: float) -> dict:
    import ray

    ttt = spec.get("mode") == "ttt"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = cartpole_config(spec) if ttt else throughput_config(spec)
        algo = config.build_algo()
        built = time.time()
        cap = spec["ttt_cap_steps"] if ttt else spec["steps"]
        deadline = t0 + spec["max_seconds"]
        start = time.perf_counter()
        points, steps, hit, best, iterations = [(0.0, 0)], 0, {}, None, 0
        while steps < cap and time.time() < deadline:
            result = algo.train()
            iterations += 1
            steps = _lifetime_steps(result)
            points.append((time.perf_counter() - start, steps))
            ret = _return_mean(result)
            print(f"iteration {iterations}: {steps:,} env steps, {time.time() - t0:.1f} s, "
                  f"episode_return_mean {ret}", flush=True)
            if ret is not None:
                best = ret if best is None else max(best, ret)
            if ttt and ret is not None and ret >= spec["target"]:
                hit = dict(env_steps=steps, wall_s=time.time() - t0, return_mean=ret)
                break
        batch = config.train_batch_size_per_learner or config.train_batch_size
        out = dict(env_steps_total=steps, iterations=iterations, build_s=built - t0, wall_s=time.time() - t0,
                   train_batch=batch, best_return=best)
        algo.stop()
    finally:
        ray.shutdown()
    if ttt:
        out.update(reached=bool(hit), ttt_env_steps=hit.get("env_steps"), ttt_wall_s=hit.get("wall_s"),
                   settings="RLlib's tuned CartPole example (lr 3e-4, gamma 0.99, 6 epochs, vf_loss_coeff 0.01, "
                            "KL loss, shared [32] linear net; PPO defaults: batch 4000, minibatch 128, "
                            "2 env runners); return = env_runners/episode_return_mean (last 100 episodes)")
        return out
    out.update(steady(points, spec["warmup"]))
    return out

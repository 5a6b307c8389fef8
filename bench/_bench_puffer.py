"""PufferLib's own single-process trainer (pufferlib.pufferl.PuffeRL) over the same env.

pufferlib-core ships no .ini files, so the config dict PuffeRL reads is built here (keys from
PuffeRL.__init__/evaluate/train in pufferl.py), with the trainer's hyperparameters. Choices that
keep the comparison fair, and why:
- vecenv: ``pufferlib.vector.Serial`` over one native ``ProspectorEnv`` holding all N envs (the
  PufferEnv's own recv() returns 7 values, PuffeRL.evaluate unpacks 8 - teacher actions - so the
  bare env cannot be passed; Serial with one sub-env adds only a buffer slice per step). CartPole:
  Serial over N ``GymnasiumPufferEnv(EpisodeStats(CartPole-v1))`` (EpisodeStats puts
  episode_return into the infos, where PuffeRL reads episode stats).
- policy: the trainer's own MLP (training.policy, separate actor/critic, tanh, orthogonal init)
  behind the two calls PuffeRL makes: forward_eval(obs, state) and forward(obs, state), both
  returning (logits, value).
- prioritized replay off (prio_alpha 0: uniform minibatch sampling of bptt segments), no
  torch.compile, no RNN, float32, device cpu, dashboard printing off (it redraws a rich table
  every 0.25 s, which would cost PuffeRL time the others do not spend).
"""

from __future__ import annotations

import functools
import tempfile
import time
import warnings

import torch
from torch import nn

from bench._bench_ours import steady


class PufferPolicy(nn.Module):
    def __init__(self, obs_space, act_space, hidden):
        super().__init__()
        from training.agent import mlp_agent

        self.net = mlp_agent(obs_space, act_space, hidden=tuple(hidden))

    def forward_eval(self, observations, state=None):
        return self.net(observations)  # (logits (B, n), value (B,))

    def forward(self, observations, state=None):
        return self.forward_eval(observations, state)


def _import_pufferl():
    import pufferlib.pufferl as pufferl

    # Importing pufferl turns every RuntimeWarning into an exception (warnings.filterwarnings
    # "error" at module level); a benign NumPy warning inside an env would then abort the run.
    warnings.filterwarnings("default", category=RuntimeWarning)

    class QuietPuffeRL(pufferl.PuffeRL):
        def print_dashboard(self, *args, **kwargs):
            pass

    return pufferl, QuietPuffeRL


def _stats_env(make_gym_env, buf=None, seed=0):
    """A Gymnasium env behind PufferLib's emulation, with ``EpisodeStats`` so that PuffeRL sees
    episode returns in the infos."""
    import pufferlib.emulation
    from pufferlib.pufferlib import EpisodeStats

    return pufferlib.emulation.GymnasiumPufferEnv(env_creator=lambda: EpisodeStats(make_gym_env()), buf=buf, seed=seed)


def stats_vecenv(make_gym_env, num_envs: int, seed: int):
    """``num_envs`` of ``_stats_env`` under PufferLib's Serial backend."""
    import pufferlib.vector

    creator = functools.partial(_stats_env, make_gym_env)
    return pufferlib.vector.make(creator, num_envs=num_envs, backend=pufferlib.vector.Serial, seed=seed)


def make_vecenv(env_spec: str, num_envs: int, seed: int):
    import pufferlib.vector

    if env_spec == "prospector":
        from prospector_game.env import ProspectorEnv

        creator = functools.partial(ProspectorEnv, num_envs=num_envs)
        return pufferlib.vector.make(creator, num_envs=1, backend=pufferlib.vector.Serial, seed=seed)
    if env_spec == "gym:CartPole-v1":
        import gymnasium

        return stats_vecenv(functools.partial(gymnasium.make, "CartPole-v1"), num_envs, seed)
    raise ValueError(f"no PuffeRL vecenv for {env_spec!r}")


def puffer_config(spec: dict, hp: dict, total_timesteps: int, data_dir: str) -> dict:
    batch = spec["num_envs"] * spec["rollout"]
    minibatch = batch // spec["minibatches"]
    return dict(
        env=spec["env_spec"], seed=spec["seed"], torch_deterministic=False, device=spec.get("device", "cpu"),
        cpu_offload=False,
        use_rnn=False, compile=False, compile_mode="default", compile_fullgraph=False,
        precision=spec.get("precision", "float32"),
        batch_size=batch, bptt_horizon=spec["rollout"], minibatch_size=minibatch, max_minibatch_size=minibatch,
        update_epochs=spec["epochs"], total_timesteps=total_timesteps,
        optimizer="adam", learning_rate=hp["lr"], adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-5,
        anneal_lr=True, gamma=hp["gamma"], gae_lambda=hp["gae_lambda"], clip_coef=hp["clip"],
        vf_clip_coef=hp["vf_clip"], vf_coef=hp["vf_coef"], ent_coef=hp["ent_coef"],
        max_grad_norm=hp["max_grad_norm"], vtrace_rho_clip=1.0, vtrace_c_clip=1.0,
        prio_alpha=0.0, prio_beta0=1.0, checkpoint_interval=10**9, data_dir=data_dir,
    )


def run_puffer(spec: dict, t0: float) -> dict:
    ttt = spec.get("mode") == "ttt"
    pufferl, QuietPuffeRL = _import_pufferl()
    torch.manual_seed(spec["seed"])
    vecenv = make_vecenv(spec["env_spec"], spec["num_envs"], spec["seed"])
    policy = PufferPolicy(vecenv.single_observation_space, vecenv.single_action_space, spec["hidden"])
    policy = policy.to(spec.get("device", "cpu"))  # PuffeRL trains the policy where it is (bench/device)
    cap = spec["ttt_cap_steps"] if ttt else spec["steps"]
    data_dir = tempfile.mkdtemp(prefix="puffer_bench_", dir=spec.get("run_root"))
    # total_timesteps sets the LR schedule's length; it is set one batch beyond the budget so the
    # end-of-training checkpoint PuffeRL writes does not land inside the measurement.
    config = puffer_config(spec, spec["hp"], cap + spec["num_envs"] * spec["rollout"], data_dir)
    trainer = QuietPuffeRL(config, vecenv, policy)
    deadline = t0 + spec["max_seconds"]
    start = time.perf_counter()
    points = [(0.0, 0)]
    window, window_returns, hit, best = 10_000, [], {}, None
    next_edge, seen = window, 0
    try:
        while trainer.global_step < cap and time.time() < deadline:
            stats = trainer.evaluate()
            returns = list(stats.get("episode_return", []))
            window_returns += returns[seen:]
            seen = len(returns)
            logs = trainer.train()
            if logs is not None:  # PuffeRL averaged and cleared its stats
                seen = 0
            points.append((time.perf_counter() - start, trainer.global_step))
            if ttt and trainer.global_step >= next_edge:  # 10k-step windows, as the trainer's
                mean = sum(window_returns) / len(window_returns) if window_returns else None
                if mean is not None:
                    best = mean if best is None else max(best, mean)
                print(f"{trainer.global_step:,} env steps, {time.time() - t0:.1f} s, return_mean {mean}", flush=True)
                if mean is not None and mean >= spec["target"]:
                    hit = dict(env_steps=trainer.global_step, wall_s=time.time() - t0, return_mean=mean)
                    break
                window_returns, next_edge = [], next_edge + window
    finally:
        trainer.utilization.stop()  # PuffeRL's monitor thread is not a daemon
    out = dict(env_steps_total=trainer.global_step, wall_s=time.time() - t0, puffer_config=config,
               vecenv=type(vecenv).__name__)
    if ttt:
        out.update(reached=bool(hit), ttt_env_steps=hit.get("env_steps"), ttt_wall_s=hit.get("wall_s"),
                   best_return=best,
                   settings=f"this trainer's CartPole preset (8 envs x 32 steps, 1 minibatch, 20 epochs, lr 1e-3, "
                            f"gamma 0.98, lambda 0.8, ent 0, MLP 64,64), cosine LR over {cap} steps, "
                            "10k-step windows")
        return out
    out.update(steady(points, spec["warmup"]))
    return out

"""Plug-ins for Gymnasium's CartPole: its preset, registered like any env's (pyproject.toml,
entry-point group ``prospector_trainer.envs``), so ``--env gym:CartPole-v1`` trains well with
every other flag at its default; and ``cartpole_positions``, CartPole without its velocities
(``training.envs.partial``), with an LSTM. This module imports nothing heavy: the driver loads
every plug-in to read presets, and must stay free of PufferLib and torch.

The numbers follow the well-known tuned PPO settings for CartPole (small batches, many epochs,
no entropy bonus); they reach a return of 475 well inside 200k steps (docs/BENCHMARKS.md).
"""

from training.envs.plugin import EnvPlugin

CARTPOLE = EnvPlugin(
    name="gym:CartPole-v1",
    env="gym:CartPole-v1",
    preset=dict(
        ppo_num_envs=8,
        ppo_num_workers=1,
        ppo_rollout_steps=32,
        ppo_num_minibatches=1,
        ppo_update_epochs=20,
        ppo_learning_rate=1e-3,
        ppo_gamma=0.98,
        ppo_gae_lambda=0.8,
        ppo_ent_coef=0.0,
        policy_hidden="64,64",
        learner_num_cpus=1.0,  # 256-sample minibatches gain nothing from a second thread
        # sync rounds: 20 epochs move the policy far in one update, and data one update old then
        # learned less stably (5 seeds: first 475 at a median 60k steps against 50k, and one seed
        # fell back from 500 to 36 and took 110k; docs/BENCHMARKS.md, "Overlapped rounds")
        async_rollouts=False,
    ),
)


CARTPOLE_POSITIONS = EnvPlugin(
    name="cartpole_positions",
    env="training.envs.partial:cartpole_positions",
    preset=dict(
        policy_lstm_size=64,
        policy_hidden="64,64",
        # normalised inputs: the angle moves by ~0.01 rad a step, too little for an LSTM to read a
        # velocity from raw (first to 475: 320k steps without, 180k with)
        ppo_norm_obs=True,
        ppo_num_envs=16,
        ppo_num_workers=2,
        ppo_rollout_steps=64,
        ppo_num_minibatches=4,
        ppo_update_epochs=8,
        ppo_learning_rate=1e-3,
        ppo_ent_coef=0.0,
        async_rollouts=False,  # tuned and measured in sync rounds, as CartPole's preset runs
    ),
)

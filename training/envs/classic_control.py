"""A plug-in for Gymnasium's CartPole: its preset, registered like any env's (pyproject.toml,
entry-point group ``prospector_trainer.envs``), so ``--env gym:CartPole-v1`` trains well with
every other flag at its default.

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
    ),
)

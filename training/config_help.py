"""The help text of each setting (``prospector train --help``; ``config_cli`` appends the default
as resolved for the ``--env`` given). Settings without an entry show their default only."""

HELP = {
    "env": "a registered env (`prospector envs` lists them) | gym:<Gymnasium id> | pz:<PettingZoo id or module> | "
           "package.module:factory (docs/EXTENDING.md)",
    "env_rules": "the env's rule set, for envs that have several; passed to the env's factory as `rules`",
    "env_time_max": "the env's episode time limit, for envs that take one; passed to the env's factory as "
                    "`time_max`",
    "address": "join an existing Ray cluster; unset: RAY_ADDRESS, else an embedded local Ray",
    "resume": "continue the run in this directory from its latest complete checkpoint",
    "runner_timeout_s": "an env runner whose rollout takes longer is taken for hung: it is replaced and the "
                        "rollout collected again, as for a runner that died (0: wait forever)",
    "learner_timeout_s": "a learner whose update or checkpoint takes longer is taken for hung: the run goes back "
                         "to its latest checkpoint, as when the learner dies (0: wait forever)",
    "keep_checkpoints": "keep the newest N checkpoints and the one of the best window return; an older one is "
                        "deleted once a newer one is written (0: keep every checkpoint)",
    "ppo_reward_scale": "rewards are multiplied by this for learning only (value targets); reported returns stay raw",
    "ppo_norm_obs": "normalise observations by their running mean and variance (merged from every runner's "
                    "rollouts, kept in checkpoints, applied by eval), clipped to +-10; on by default for continuous "
                    "actions without a preset",
    "ppo_norm_reward": "divide rewards by the running standard deviation of the discounted return, clipped to "
                       "+-10 (VecNormalize's rule), for learning only: reported returns stay raw; on by "
                       "default for continuous actions without a preset",
    "kickstart_teacher": "kickstarting: a behaviour (a name the env offers, `prospector envs`, or "
                         "package.module:callable mapping a batch of observations to actions) whose actions the "
                         "policy is also trained to match; 'none' switches a preset's teacher off",
    "kickstart_steps": "env steps over which the kickstarting coefficient decays linearly to 0",
    "kickstart_warmup_steps": "the first env steps are played by the teacher, and the policy learns by cloning "
                              "it (no policy gradient); its windows' returns are the teacher's",
    "kickstart_rollin_steps": "while the teacher is on, it plays the first U{0..N} decisions of every training "
                              "episode (a fresh draw each), so the policy also learns from late-game states; those "
                              "decisions train the critic and the distillation term, never the policy gradient",
    "kickstart_rollin_prob": "the share of episodes that get a roll-in (the others start with the policy)",
    "async_rollouts": "overlapped rounds: runners collect the next rollout, one update behind, while the learner "
                      "trains (corrected: V-trace targets and the decoupled PPO objective); --no-async-rollouts: "
                      "sync rounds, strictly on-policy. Data-parallel learners (--num-learners) run sync",
    "wait_for_resources_s": "seconds the env runners, then the learner, may take to be placed and started "
                            "(a process imports torch and builds its env); past that the run fails naming "
                            "the resources it needs",
    "policy": "default (cnn for image observations: a uint8 Box H x W x C or C x H x W with C <= 4; mlp for any "
              "other), mlp (actor and critic MLPs over the observation, Dict/Tuple/Discrete parts one-hot or "
              "flattened), cnn (the Nature CNN, at least 36 x 36 pixels; --policy-hidden sets its linear layers, "
              "512 in the paper), a policy the env offers (`prospector envs`), or package.module:factory, called as "
              "factory(env, **kwargs) the PufferLib way (pufferlib.models:Default works); --policy-arch is another "
              "name for this flag",
    "env_kwargs": "JSON object of keyword arguments for the env: passed to a factory, or to gymnasium.make(id, "
                  "**kwargs) for gym:<id>, e.g. '{\"length\": 32}'",
    "policy_kwargs": "JSON object of keyword arguments for the policy's factory, e.g. '{\"hidden_size\": 128}'",
    "policy_hidden": "hidden sizes, comma-separated: the policy factory's `hidden` argument when it has one and "
                     "--policy-kwargs does not set it (for the CNN: its linear layers after the convolutions)",
    "policy_lstm_size": "units of an LSTM between the policy's encoder and its actor and critic (PufferLib's "
                        "LSTMWrapper); the learner trains it through time over whole env columns. 0: feed-forward",
    "policy_prior": "residual policy (Discrete actions): a behaviour (a name the env offers, `prospector envs`, "
                    "or package.module:callable mapping a batch of observations to actions) whose "
                    "action gets --policy-prior-logit added to its logit, so the policy starts as a softened copy "
                    "and PPO learns where to depart from it; 'none' switches a preset's prior off",
    "policy_prior_logit": "the logit added to the prior's action",
    "learner_device": "auto picks CUDA when the cluster has a GPU",
    "learner_precision": "bfloat16 runs the PPO update's matmuls under autocast (losses and Adam stay float32); "
                         "auto = bfloat16 where the learner's hardware has it natively",
    "learner_resource": "custom Ray resource the learner must run on (e.g. 'learner')",
    "learner_num_gpus": "the share of a GPU each CUDA learner asks Ray for (below 1 leaves room for runners "
                        "doing inference on the same GPU, --runner-num-gpus)",
    "runner_device": "where the runners' policies act: cpu, or cuda (one host-to-device copy of the observations "
                     "and one copy back of the actions, log-probs and values per step; needs --runner-num-gpus)",
    "runner_num_gpus": "the share of a GPU each runner asks Ray for with --runner-device cuda (e.g. 0.05: 14 "
                       "runners in 0.7 of one GPU beside --learner-num-gpus 0.3)",
    "num_learners": "data-parallel learners: each trains on 1/N of every round's env columns (N must divide "
                    "--ppo-num-envs) and their gradients are summed with torch.distributed (gloo on CPU, NCCL on "
                    "CUDA), so the update is one learner's; learner 0 publishes the weights and writes checkpoints",
}
HELP.update({
    "wandb_entity": "the W&B team or user the run is logged under; unset: your W&B default entity",
    "wandb_group": "a W&B group for the run (e.g. one per sweep or experiment)",
    "wandb_tags": "W&B tags, comma-separated",
    "tensorboard": "also write every window row as TensorBoard scalars under <run>/tensorboard "
                   "(`tensorboard --logdir runs`)",
    "total_env_steps": "env steps (decisions summed over envs) to train for",
    "window_env_steps": "env steps per window: one row of metrics/windows.jsonl, one progress line",
})

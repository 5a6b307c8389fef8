"""The game's plug-in: how ``--env prospector`` builds the env, its preset, the policies and
behaviours (scripted bots) it offers by name, and its tool hooks (``prospector_game.tools``).
Registered in pyproject.toml under the entry-point group ``prospector_trainer.envs``."""

from __future__ import annotations

from training.config import ConfigError
from training.envs.plugin import EnvPlugin

RULE_SETS = ("v1", "v2")
POLICIES = {"masked_mlp": "prospector_game.policies:masked_mlp", "slots": "prospector_game.policies:slots"}
# Behaviours play v2's market timer; prospector_game.bots:market_timer_v1 is v1's.
BEHAVIOURS = {name: f"prospector_game.bots:{fn}" for name, fn in (
    ("greedy_miner", "greedy_miner"), ("cautious_scanner", "cautious_scanner"), ("market_timer", "market_timer"),
    ("random", "random_bot"), ("hold", "hold_bot"), ("cash_out", "cash_out_bot"))}

# Sized for the 2-core `make run` (~5 min). From scratch, PPO falls into the cash-out-at-once local
# optimum within a few million steps, so the actor is residual: the cautious scanner's action gets
# +7 on its logit (~98% on its action before training) and PPO learns where to depart from it, with
# a light distillation term toward the same bot (weight 1 -> ~0.48 over the run) that kept every
# training seed tried near twice the bot's return; a larger entropy bonus pushed the policy off the
# bot before anything was learned. The 0.1 reward scale lets the unclipped value function keep up
# with sales worth tens per step; gamma is near 1 because the v2 terminal bonus grows with credits
# and episodes last ~10k decisions. docs/BENCHMARKS.md has the measurements.
PRESET = dict(
    env_rules="v2",
    env_time_max=20_000,
    ppo_num_envs=256,
    ppo_num_workers=2,
    ppo_rollout_steps=64,
    ppo_num_minibatches=4,
    ppo_update_epochs=4,
    ppo_learning_rate=3e-4,
    ppo_gamma=0.9999,
    ppo_gae_lambda=0.95,
    ppo_ent_coef=0.001,
    ppo_reward_scale=0.1,
    ppo_vf_clip_coef=0.0,
    policy="masked_mlp",
    policy_prior="cautious_scanner",
    policy_prior_logit=7.0,
    kickstart_teacher="cautious_scanner",
    kickstart_coef=1.0,
    kickstart_steps=10_000_000,  # weight 1 -> ~0.48 over the run's 5.2M steps
    learner_precision="auto",  # bfloat16 where the hardware has it natively
    # whole windows of whole rounds (16 rounds of 256 x 64): the final policy is checkpointed
    total_env_steps=5_242_880,
    window_env_steps=262_144,
    wandb_project="asteroid-prospector",
)


def configure(settings: dict) -> dict:
    """Check --env-rules, and give the game's own policies the rule set's prices for their mask."""
    rules = settings.get("env_rules") or "v2"
    if rules not in RULE_SETS:
        raise ConfigError("--env-rules", f"must be one of {', '.join(RULE_SETS)}; got {rules!r}")
    settings["env_rules"] = rules
    policy = str(settings.get("policy"))
    if policy in POLICIES or policy in POLICIES.values():
        settings["policy_kwargs"] = {"rules": rules, **(settings.get("policy_kwargs") or {})}
    return settings


PLUGIN = EnvPlugin(
    name="prospector",
    env="prospector_game.env:ProspectorEnv",
    preset=PRESET,
    policies=POLICIES,
    behaviours=BEHAVIOURS,
    configure=configure,
    tools="prospector_game.tools",
    # replay milestones on the game's own episode metrics (profit, survival); `return` is every env's
    settings=("eval_milestone_profit_thresholds", "eval_milestone_survival_thresholds"),
    # what ProspectorEnv.get_state's snapshot holds besides arrays: checkpoints may load these
    checkpoint_types=("prospector_game.sim:ProspectorSim", "prospector_game.queue:WorldQueue",
                      "prospector_game.consts:ActionTables", "prospector_game.consts:Rules"),
)

"""Every training setting in one place, with validation.

Flag names are those of the first version's CLI (docs/RUN_ARTIFACTS.md); the attribute of each
flag is its name without dashes (``--ppo-num-envs`` -> ``ppo_num_envs``). Settings a user does not
give come from the env's preset (its plug-in registers one, as PufferLib keeps one config per
env), else from the defaults for its kind of action space (``SPACE_DEFAULTS``), then from the
global defaults below. Validation happens here, before any Ray actor starts, and names the flag.
Nothing here imports torch or PufferLib (the driver runs it), except what an env factory without a
preset imports when ``space_defaults`` builds one env to read its action space.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass

import gymnasium

from training.envs.env_spec import probe_action_space
from training.envs.plugin import PluginError, behaviour_ref, check_ref, find_plugin, policy_ref
from training.faults import parse_faults


class ConfigError(ValueError):
    """Invalid setting; ``flag`` names the offending command-line flag."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag, self.message = flag, message

    def __reduce__(self):  # raised inside an actor, it reaches the driver whole
        return ConfigError, (self.flag, self.message)


@dataclass
class TrainConfig:
    # run
    run_root: str = "runs"
    run_id: str | None = None
    resume: str | None = None
    total_env_steps: int = 100_000
    window_env_steps: int = 10_000
    checkpoint_every_windows: int = 1
    keep_checkpoints: int = 5
    seed: int = 0
    flush_partial_window: bool = False
    # env
    env: str = "prospector"  # the first version's CLI trained the game without --env
    env_rules: str | None = None  # for envs with several rule sets; None: the env's own default
    env_time_max: int | None = None  # episode limit, for envs that take one; None: the env's own
    env_kwargs: dict = dataclasses.field(default_factory=dict)  # the env factory's (or gymnasium.make's) arguments
    ppo_vector_backend: str = "serial"
    # trainer
    trainer_backend: str = "puffer_ppo"
    ppo_num_envs: int = 8
    ppo_num_workers: int = 4
    ppo_rollout_steps: int = 128
    ppo_num_minibatches: int = 4
    ppo_update_epochs: int = 4
    ppo_learning_rate: float = 3e-4
    ppo_anneal_lr: bool = True
    ppo_gamma: float = 0.99
    ppo_gae_lambda: float = 0.95
    ppo_clip_coef: float = 0.2
    ppo_vf_clip_coef: float = 0.2
    ppo_ent_coef: float = 0.01
    ppo_vf_coef: float = 0.5
    ppo_max_grad_norm: float = 0.5
    ppo_norm_adv: bool = True
    ppo_reward_scale: float = 1.0
    # On for continuous actions without a preset (SPACE_DEFAULTS), as the reference recipes do.
    ppo_norm_obs: bool = False
    ppo_norm_reward: bool = False
    policy: str = "default"  # the CNN for image observations, the MLP for any other
    policy_kwargs: dict = dataclasses.field(default_factory=dict)
    policy_hidden: str = "256,256"
    policy_lstm_size: int = 0  # 0: feed-forward
    policy_prior: str | None = None
    policy_prior_logit: float = 5.0
    async_rollouts: bool = True
    kickstart_teacher: str | None = None
    kickstart_coef: float = 1.0
    kickstart_steps: int = 0
    kickstart_warmup_steps: int = 0
    kickstart_rollin_steps: int = 0
    kickstart_rollin_prob: float = 1.0
    # ray
    address: str | None = None
    learner_device: str = "auto"
    # bfloat16 autocast in the PPO update takes ~0.5-0.7x the time where the hardware has it natively
    # (docs/BENCHMARKS.md); auto = bfloat16 there, float32 elsewhere.
    learner_precision: str = "float32"
    runner_num_cpus: float = 1.0
    # Sync mode alternates: the runners wait while the learner trains, so the learner gets two
    # cores' worth of threads (docs/BENCHMARKS.md, "Why the learner gets 2 CPUs").
    learner_num_cpus: float = 2.0
    runner_placement: str = "spread"
    learner_resource: str | None = None
    # GPU nodes (docs/CLUSTER.md, "GPU nodes"): the learner's share of a GPU when it runs on CUDA,
    # where the runners' policies run, and each runner's share of a GPU (Ray's num_gpus)
    learner_num_gpus: float = 1.0
    runner_device: str = "cpu"
    runner_num_gpus: float = 0.0
    # data-parallel learners: each takes 1 / N of a round's env columns; gradients are all-reduced
    num_learners: int = 1
    wait_for_resources_s: float = 300.0
    # logging
    wandb_mode: str = "disabled"
    wandb_project: str = "prospector-trainer"
    wandb_entity: str | None = None
    wandb_group: str | None = None
    wandb_tags: str | None = None  # comma-separated
    tensorboard: bool = False
    # evaluation replays
    eval_replays_per_window: int = 0
    eval_max_steps_per_episode: int | None = None
    eval_policy_deterministic: bool = True
    eval_seed_offset: int = 100_000
    eval_milestone_profit_thresholds: str = "100,500,1000"
    eval_milestone_return_thresholds: str = "10,25,50"
    eval_milestone_survival_thresholds: str = "1.0"
    # reliability
    max_runner_restarts_per_window: int = 3
    max_learner_restarts: int = 2
    runner_timeout_s: float = 600.0
    learner_timeout_s: float = 600.0
    fault_inject: str | None = None  # hidden, tests only: see training/faults.py

    # ---- derived values (not flags) ----
    @property
    def envs_per_worker(self) -> int:
        return self.ppo_num_envs // self.ppo_num_workers

    @property
    def steps_per_round(self) -> int:
        """Decisions summed over all envs in one collection round (every runner's rollout)."""
        return self.ppo_num_envs * self.ppo_rollout_steps

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return parse_int_list(self.policy_hidden, "--policy-hidden")

    @property
    def total_rounds(self) -> int:
        return math.ceil(self.total_env_steps / self.steps_per_round)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


CHOICES = {
    "trainer_backend": ("puffer_ppo", "random"),
    "ppo_vector_backend": ("serial", "multiprocessing"),
    "wandb_mode": ("disabled", "offline", "online"),
    "learner_device": ("auto", "cpu", "cuda"),
    "runner_device": ("cpu", "cuda"),
    "learner_precision": ("auto", "float32", "bfloat16"),
    "runner_placement": ("spread", "pack"),
}


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def parse_int_list(text: str, flag_name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(flag_name, f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(flag_name, f"expected positive integers, got {text!r}")
    return values


def parse_float_list(text: str, flag_name: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in str(text).split(",") if x.strip())
    except ValueError:
        raise ConfigError(flag_name, f"expected comma-separated numbers, got {text!r}") from None


# Defaults for an env without a preset, by its action space. Continuous control takes the recipe of
# the reference implementations (CleanRL's ppo_continuous_action.py, baselines' MuJoCo settings):
# 2,048-step rounds over 8 envs, 10 epochs of 64-sample minibatches, no entropy bonus, 64x64
# tanh networks, normalised observations and rewards. Without normalisation the critic's loss on
# unscaled returns takes the whole gradient clip and the policy never moves (docs/BENCHMARKS.md,
# "Continuous control").
SPACE_DEFAULTS = {
    "box": dict(ppo_rollout_steps=256, ppo_num_minibatches=32, ppo_update_epochs=10, ppo_learning_rate=3e-4,
                ppo_gamma=0.99, ppo_gae_lambda=0.95, ppo_ent_coef=0.0, policy_hidden="64,64",
                ppo_norm_obs=True, ppo_norm_reward=True,
                # the MuJoCo recipe (10 epochs x 32 minibatches a round) was tuned and measured in
                # sync rounds (docs/BENCHMARKS.md, "Continuous control"); overlapped is unmeasured there
                async_rollouts=False),
}


def action_kind(space) -> str | None:
    """'box', 'discrete' or 'multidiscrete' for an action space; None for anything else."""
    kinds = {gymnasium.spaces.Box: "box", gymnasium.spaces.Discrete: "discrete",
             gymnasium.spaces.MultiDiscrete: "multidiscrete"}
    return next((kind for cls, kind in kinds.items() if isinstance(space, cls)), None)


def space_defaults(env: str, env_kwargs: dict | None = None) -> dict:
    """SPACE_DEFAULTS for ``env``'s action space (one env is built to read it), or {}."""
    return dict(SPACE_DEFAULTS.get(action_kind(probe_action_space(env, env_kwargs)), {}))


def preset_for(env: str) -> dict:
    """The settings the env's plug-in registers ({} for an env without one)."""
    plugin = find_plugin(env)
    return dict(plugin.preset) if plugin else {}


def validate(cfg: TrainConfig) -> TrainConfig:
    """Reject impossible settings with the flag named. Returns cfg for chaining."""
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(flag(name), f"must be one of {', '.join(allowed)}; got {getattr(cfg, name)!r}")
    positive_ints = (
        "total_env_steps", "window_env_steps", "checkpoint_every_windows", "env_time_max",
        "ppo_num_envs", "ppo_num_workers", "ppo_rollout_steps", "ppo_num_minibatches", "ppo_update_epochs",
    )
    if not isinstance(cfg.keep_checkpoints, int) or isinstance(cfg.keep_checkpoints, bool) or cfg.keep_checkpoints < 0:
        raise ConfigError(flag("keep_checkpoints"), f"must be an integer >= 0 (0 keeps all); got {cfg.keep_checkpoints!r}")
    for name in positive_ints:
        value = getattr(cfg, name)
        if value is None and name == "env_time_max":
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(flag(name), f"must be a positive integer; got {value!r}")
    if cfg.window_env_steps > cfg.total_env_steps:
        raise ConfigError(
            "--window-env-steps",
            f"{cfg.window_env_steps} is larger than the whole run (--total-env-steps {cfg.total_env_steps})",
        )
    if cfg.window_env_steps < cfg.ppo_num_envs:
        raise ConfigError("--window-env-steps", f"{cfg.window_env_steps} is less than one vector step (one decision "
                                                f"of each of the {cfg.ppo_num_envs} envs, --ppo-num-envs)")
    if cfg.ppo_num_envs % cfg.ppo_num_workers:
        raise ConfigError(
            "--ppo-num-envs",
            f"{cfg.ppo_num_envs} envs do not divide evenly over --ppo-num-workers {cfg.ppo_num_workers}",
        )
    if cfg.trainer_backend == "puffer_ppo" and cfg.steps_per_round % cfg.ppo_num_minibatches:
        raise ConfigError(
            "--ppo-num-minibatches",
            f"a rollout of {cfg.steps_per_round} samples (--ppo-num-envs {cfg.ppo_num_envs} x "
            f"--ppo-rollout-steps {cfg.ppo_rollout_steps}) does not split into {cfg.ppo_num_minibatches} equal minibatches",
        )
    for name in ("ppo_learning_rate", "ppo_reward_scale"):
        if not getattr(cfg, name) > 0:
            raise ConfigError(flag(name), f"must be > 0; got {getattr(cfg, name)!r}")
    for name in ("ppo_gamma", "ppo_gae_lambda"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(flag(name), f"must be within [0, 1]; got {getattr(cfg, name)!r}")
    for name in ("ppo_clip_coef", "ppo_ent_coef", "ppo_vf_coef", "ppo_max_grad_norm"):
        if not getattr(cfg, name) >= 0 or not math.isfinite(getattr(cfg, name)):
            raise ConfigError(flag(name), f"must be a finite number >= 0; got {getattr(cfg, name)!r}")
    if not cfg.runner_num_cpus > 0 or not cfg.learner_num_cpus > 0:
        raise ConfigError("--runner-num-cpus", "CPU requests must be > 0")
    _check_devices(cfg)
    if cfg.eval_replays_per_window < 0:
        raise ConfigError("--eval-replays-per-window", f"must be >= 0; got {cfg.eval_replays_per_window}")
    if cfg.eval_max_steps_per_episode is not None and cfg.eval_max_steps_per_episode <= 0:
        raise ConfigError("--eval-max-steps-per-episode", "must be a positive integer")
    parse_int_list(cfg.policy_hidden, "--policy-hidden")
    _check_recurrent(cfg)
    _check_policy(cfg)
    if cfg.kickstart_teacher is not None:
        _check_behaviour(cfg.kickstart_teacher, cfg.env, "--kickstart-teacher")
        if cfg.kickstart_steps <= 0 or cfg.kickstart_coef <= 0:
            raise ConfigError("--kickstart-steps", "kickstarting needs --kickstart-steps > 0 and --kickstart-coef > 0")
    if cfg.kickstart_warmup_steps:
        if cfg.kickstart_teacher is None:
            raise ConfigError("--kickstart-warmup-steps", "the warm-up needs a teacher (--kickstart-teacher)")
        if not 0 < cfg.kickstart_warmup_steps < cfg.kickstart_steps:
            raise ConfigError("--kickstart-warmup-steps", f"must be > 0 and below --kickstart-steps "
                                                          f"({cfg.kickstart_steps}), where the teacher's weight reaches 0; "
                                                          f"got {cfg.kickstart_warmup_steps}")
    if cfg.kickstart_rollin_steps:
        if cfg.kickstart_teacher is None:
            raise ConfigError("--kickstart-rollin-steps", "roll-ins need a teacher (--kickstart-teacher)")
        if cfg.kickstart_rollin_steps < 0:
            raise ConfigError("--kickstart-rollin-steps", f"must be >= 0; got {cfg.kickstart_rollin_steps}")
    if not 0.0 < cfg.kickstart_rollin_prob <= 1.0:
        raise ConfigError("--kickstart-rollin-prob", f"must be within (0, 1]; got {cfg.kickstart_rollin_prob!r}")
    if cfg.max_runner_restarts_per_window < 0 or cfg.max_learner_restarts < 0:
        raise ConfigError("--max-runner-restarts-per-window", "restart limits must be >= 0")
    for name in ("runner_timeout_s", "learner_timeout_s"):
        if not isinstance(getattr(cfg, name), (int, float)) or not getattr(cfg, name) >= 0:
            raise ConfigError(flag(name), f"must be a number of seconds >= 0 (0: no limit); got {getattr(cfg, name)!r}")
    try:
        parse_faults(cfg.fault_inject)
    except ValueError as e:
        raise ConfigError("--fault-inject", str(e).split(": ", 1)[1]) from None
    for name in ("eval_milestone_profit_thresholds", "eval_milestone_return_thresholds",
                 "eval_milestone_survival_thresholds"):
        parse_float_list(getattr(cfg, name), flag(name))
    if not cfg.env or not isinstance(cfg.env, str):
        raise ConfigError("--env", "must name an env")
    if not isinstance(cfg.env_kwargs, dict) or not all(isinstance(k, str) and k.isidentifier() for k in cfg.env_kwargs):
        raise ConfigError("--env-kwargs", f"must be a JSON object of keyword arguments; got {cfg.env_kwargs!r}")
    return cfg


# what one learner keeps as running state over the whole batch, or trains on whole env columns:
# data-parallel learners do not (yet) share those (docs/CLUSTER.md, "GPU nodes")
_SINGLE_LEARNER_ONLY = (("async_rollouts", "overlapped rollouts compute V-trace inside the update"),
                        ("policy_lstm_size", "a recurrent policy trains on whole env columns"),
                        ("kickstart_teacher", "kickstarting's distillation term"),
                        ("ppo_norm_obs", "the observation normaliser's running moments"),
                        ("ppo_norm_reward", "the reward scaler's running return"))


def _check_devices(cfg: TrainConfig) -> None:
    """GPU shares, runner inference's device, and data-parallel learners."""
    for name in ("learner_num_gpus", "runner_num_gpus"):
        value = getattr(cfg, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not (value >= 0 and math.isfinite(value)):
            raise ConfigError(flag(name), f"must be a finite number >= 0; got {value!r}")
    if not cfg.learner_num_gpus > 0:
        raise ConfigError("--learner-num-gpus", f"must be > 0 (a CUDA learner needs a share of a GPU); "
                                                f"got {cfg.learner_num_gpus!r}")
    if cfg.runner_device == "cuda" and not cfg.runner_num_gpus > 0:
        raise ConfigError("--runner-num-gpus", "--runner-device cuda needs a share of a GPU per runner "
                                               "(e.g. 0.05 for 14 runners beside a learner on one GPU)")
    if cfg.runner_device == "cpu" and cfg.runner_num_gpus:
        raise ConfigError("--runner-num-gpus", f"{cfg.runner_num_gpus:g} GPUs per runner with --runner-device cpu "
                                               "would hold GPUs that nothing uses")
    n = cfg.num_learners
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError("--num-learners", f"must be a positive integer; got {n!r}")
    if n == 1:
        return
    if cfg.ppo_num_envs % n:
        raise ConfigError("--num-learners", f"{n} learners cannot split --ppo-num-envs {cfg.ppo_num_envs} into equal "
                                            "shares of env columns: it must divide the envs")
    for name, what in _SINGLE_LEARNER_ONLY:
        if getattr(cfg, name):
            raise ConfigError("--num-learners", f"{n} learners do not work with {flag(name)} ({what} is kept by "
                                                "one learner): use one learner, or switch it off"
                                                + (" ('none')" if name == "kickstart_teacher" else ""))


def _check_recurrent(cfg: TrainConfig) -> None:
    size = cfg.policy_lstm_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError("--policy-lstm-size", f"must be an integer >= 0 (0: no LSTM); got {size!r}")
    if size:
        check_env_columns(cfg)


def check_env_columns(cfg: TrainConfig) -> None:
    """A recurrent policy trains on minibatches of whole env columns: the minibatches must split
    the envs. Checked here for --policy-lstm-size, and by the learner for any recurrent policy."""
    if cfg.ppo_num_envs % cfg.ppo_num_minibatches:
        raise ConfigError("--ppo-num-minibatches", f"{cfg.ppo_num_minibatches} does not divide --ppo-num-envs "
                                                   f"{cfg.ppo_num_envs}: a recurrent policy trains on minibatches "
                                                   "of whole env columns")


def _check_behaviour(value: str, env: str, flag_name: str) -> None:
    try:
        check_ref(behaviour_ref(value, env, flag_name), flag_name)
    except PluginError as e:
        raise ConfigError(flag_name, str(e).removeprefix(f"{flag_name} ")) from None


def _check_policy(cfg: TrainConfig) -> None:
    """The policy's factory and prior can be found (their modules are not imported: the driver
    stays free of torch); the learner builds them."""
    try:
        check_ref(policy_ref(cfg.policy, cfg.env), "--policy")
    except PluginError as e:
        raise ConfigError("--policy", str(e).removeprefix("--policy ")) from None
    if not isinstance(cfg.policy_kwargs, dict) or not all(isinstance(k, str) for k in cfg.policy_kwargs):
        raise ConfigError("--policy-kwargs", f"must be a JSON object; got {cfg.policy_kwargs!r}")
    if cfg.policy_prior is not None:
        _check_behaviour(cfg.policy_prior, cfg.env, "--policy-prior")
    if not (cfg.policy_prior_logit > 0 and math.isfinite(cfg.policy_prior_logit)):
        raise ConfigError("--policy-prior-logit", f"must be a finite number > 0; got {cfg.policy_prior_logit!r}")


def config_from_args(ns: argparse.Namespace | dict, base: dict | None = None, file: dict | None = None) -> TrainConfig:
    """Explicit flags win over a config file's settings (``file``, flat), then the base (a resumed
    run's config) or else the env's preset or its action space's defaults."""
    given = {k: v for k, v in (vars(ns) if isinstance(ns, argparse.Namespace) else ns).items() if v is not None}
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in {**(file or {}), **given}.items() if k in names}
    for name in ("policy_kwargs", "env_kwargs"):  # JSON text from a flag
        if isinstance(given.get(name), str):
            try:
                given[name] = json.loads(given[name])
            except ValueError as e:
                raise ConfigError(flag(name), f"not valid JSON ({e})") from None
    values = dict(base or {})
    env = given.get("env", values.get("env", TrainConfig.env))
    if base is None:  # a resumed run's config is already resolved
        preset = preset_for(env)
        env_kwargs = given.get("env_kwargs")
        values.update(preset or space_defaults(env, env_kwargs if isinstance(env_kwargs, dict) else None))
    values.update(given)
    if str(values.get("policy_prior")).lower() == "none":  # switch a preset's prior off
        values["policy_prior"] = None
    if values.get("num_learners", 1) != 1 and "async_rollouts" not in given:
        values["async_rollouts"] = False  # data-parallel learners do not overlap (yet): sync unless asked
    if str(values.get("kickstart_teacher")).lower() == "none":  # switch a preset's teacher off
        values["kickstart_teacher"] = None
        if "kickstart_rollin_steps" not in given:  # and the preset's roll-ins, which need it
            values["kickstart_rollin_steps"] = 0
    plugin = find_plugin(env)
    if plugin is not None and plugin.configure is not None:
        values = plugin.configure(values)
    return validate(TrainConfig.from_dict(values))

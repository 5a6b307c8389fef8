"""The settings as a user meets them: flags grouped by section, config files, the printed config.

Every ``TrainConfig`` field is a flag (``--ppo-num-envs`` for ``ppo_num_envs``) and a key of a
config file (TOML, YAML or JSON), where the sections below group them::

    [env]
    env = "gym:HalfCheetah-v5"
    [ppo]
    ppo_learning_rate = 3e-4

A file may also hold the fields flat, as a run's ``config.json`` does, so that file is itself a
valid ``--config``. Precedence: the env's preset (or its action space's defaults), then the
file, then the flags (``config.config_from_args``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from training.config import CHOICES, ConfigError, TrainConfig, config_from_args, flag
from training.envs.plugin import plugin_names, find_plugin
from training.storage import RemotePath, as_path

SECTIONS = ("run", "env", "ppo", "policy", "ray", "logging", "evaluation", "reliability")
_SECTION_OF = {
    **dict.fromkeys(("run_root", "run_id", "resume", "total_env_steps", "window_env_steps",
                     "checkpoint_every_windows", "keep_checkpoints", "seed", "flush_partial_window"), "run"),
    **dict.fromkeys(("env", "env_rules", "env_time_max", "env_kwargs", "ppo_vector_backend"), "env"),
    **dict.fromkeys(("trainer_backend", "async_rollouts"), "ppo"),
    **dict.fromkeys(("address", "learner_device", "learner_precision", "runner_num_cpus", "learner_num_cpus",
                     "runner_placement", "learner_resource", "wait_for_resources_s", "learner_num_gpus",
                     "runner_device", "runner_num_gpus", "num_learners"), "ray"),
    **dict.fromkeys(("max_runner_restarts_per_window", "max_learner_restarts", "runner_timeout_s", "learner_timeout_s",
                     "fault_inject"), "reliability"),
}
_PREFIX_SECTION = (("ppo_", "ppo"), ("kickstart_", "ppo"), ("policy", "policy"), ("wandb_", "logging"),
                   ("tensorboard", "logging"), ("eval_", "evaluation"))
_LIST_FIELDS = {"policy_hidden", "wandb_tags", "eval_milestone_profit_thresholds",
                "eval_milestone_return_thresholds", "eval_milestone_survival_thresholds"}
FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def section_of(name: str) -> str:
    if name in _SECTION_OF:
        return _SECTION_OF[name]
    return next(section for prefix, section in _PREFIX_SECTION if name.startswith(prefix))


# ------------------------------------------------------------------ config files
def _parse_file(path: Path | RemotePath) -> dict:
    text = path.read_text()
    if path.suffix == ".toml":
        import tomllib

        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    if path.suffix == ".json":
        return json.loads(text)
    raise ConfigError("--config", f"{path}: expected a .toml, .yaml, .yml or .json file")


def parse_config_file(path: str | Path) -> dict:
    """The file's content as parsed (sections as nested tables), or ConfigError naming the file. A
    URI (``s3://.../best_config.json``) is read from its store (training/storage.py)."""
    path = as_path(path)
    try:
        return _parse_file(path)
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError("--config", f"{path}: no such file") from None
    except Exception as e:  # a syntax error of the format
        raise ConfigError("--config", f"{path}: not valid {path.suffix[1:].upper()} ({e})") from None


def load_config_file(path: str | Path) -> dict:
    """The settings a config file gives, flat, by field name. Unknown sections and keys, and keys in
    another section than theirs, are errors naming the file and the key."""
    return settings_from_mapping(parse_config_file(path), as_path(path))


def settings_from_mapping(data, path: Path) -> dict:
    """``load_config_file`` for an already parsed file (``path`` names it in errors)."""
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path}: expected a table of settings, got {type(data).__name__}")
    values: dict = {}
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):  # `env` is a section and a setting
            for name, v in value.items():
                values[_field(path, name, key)] = v
        else:
            values[_field(path, key, None)] = value
    values.pop("resume", None)  # resuming is an action (--resume), not a setting a file keeps
    for name in _LIST_FIELDS & values.keys():  # [256, 256] as well as "256,256"
        if isinstance(values[name], list):
            values[name] = ",".join(str(v) for v in values[name])
    return values


def _field(path: Path, key: str, section: str | None) -> str:
    name = str(key).replace("-", "_")
    if name not in FIELDS:
        where = f" in [{section}]" if section else ""
        raise ConfigError("--config", f"{path}: unknown setting {key!r}{where}; the settings are the flags of "
                                      "`prospector train --help` without their dashes")
    if section is not None and section_of(name) != section:
        raise ConfigError("--config", f"{path}: {name} belongs in [{section_of(name)}], not [{section}]")
    return name


def config_text(cfg: TrainConfig) -> str:
    """The resolved settings as ``--print-config`` prints them and config.json holds them."""
    from training.storage import json_safe

    return json.dumps(json_safe(cfg.to_dict()), indent=2, allow_nan=False) + "\n"


def resolve(ns: argparse.Namespace | dict, base: dict | None = None) -> TrainConfig:
    """``config_from_args`` with the namespace's ``--config`` file under its flags."""
    given = dict(vars(ns) if isinstance(ns, argparse.Namespace) else ns)
    path = given.pop("config", None)
    given.pop("print_config", None)
    file = load_config_file(path) if path else None
    return config_from_args(given, base=base, file=file)


# ------------------------------------------------------------------ flags
_BOOL_FLAGS = {"flush_partial_window", "tensorboard"}
_ON_OFF_FLAGS = {"ppo_anneal_lr", "ppo_norm_adv", "ppo_norm_obs", "ppo_norm_reward", "async_rollouts"}
_HIDDEN = {"fault_inject"}


def add_train_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """``--config``, ``--print-config`` and every TrainConfig field as a flag, in one group per
    section (settings only one installed env uses: in that env's group). Flag defaults are None, so
    the preset and the file fill the gaps; the help shows the defaults resolved for the ``--env``
    (and ``--config``) in ``argv``."""
    from training.config_help import HELP

    parser.add_argument("--config", metavar="FILE", help="settings from a TOML, YAML or JSON file, in sections "
                        f"({', '.join(SECTIONS)}) or flat (a run's config.json); flags override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings (preset, then file, then flags) as config.json will "
                             "hold them, and exit")
    defaults, env_note = _resolved_defaults(argv)
    groups = {s: parser.add_argument_group(f"{s} settings" + (env_note if s == "env" else "")) for s in SECTIONS}
    owners = _env_owned_settings()
    for name, f in FIELDS.items():
        group = groups[section_of(name)]
        if name in owners:
            title = f"settings only the env {owners[name]!r} uses"
            groups.setdefault(title, parser.add_argument_group(title))
            group = groups[title]
        help_text = argparse.SUPPRESS if name in _HIDDEN else _help(HELP.get(name), defaults.get(name, f.default))
        if name == "eval_policy_deterministic":
            pair = group.add_mutually_exclusive_group()
            pair.add_argument("--eval-policy-deterministic", dest=name, action="store_true", default=None,
                              help=help_text)
            pair.add_argument("--eval-policy-stochastic", dest=name, action="store_false", default=None)
        elif name in _ON_OFF_FLAGS:
            group.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif name in _BOOL_FLAGS:
            group.add_argument(flag(name), dest=name, action="store_true", default=None, help=help_text)
        else:
            kind = {int: int, float: float}.get(type(f.default), str)
            if name in ("eval_max_steps_per_episode", "env_time_max"):
                kind = int
            choices = CHOICES.get(name)
            aliases = ("--policy-arch",) if name == "policy" else ()  # its name until the policy plug-ins
            group.add_argument(flag(name), *aliases, dest=name, type=kind, default=None, choices=choices,
                               metavar=None if choices else name.split("_")[-1].upper(), help=help_text)


def _help(text: str | None, default) -> str:
    shown = json.dumps(default) if isinstance(default, (dict, bool)) or default is None else default
    return f"{text + '; ' if text else ''}default: {shown}".replace("%", "%%")


def _resolved_defaults(argv: list[str] | None) -> tuple[dict, str]:
    """The settings a run with only ``argv``'s --env and --config would get, for the help."""
    if not argv or not ({"-h", "--help"} & set(argv)):
        return {}, ""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--env")
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    try:
        cfg = resolve({"env": known.env, "config": known.config})
    except Exception:  # noqa: BLE001 - the help must print even for a broken --env or file
        return {}, " (defaults: the global ones; the --env or --config given does not resolve)"
    return cfg.to_dict(), f" (defaults as resolved for --env {cfg.env})"


def _env_owned_settings() -> dict[str, str]:
    """{field: env name} for the settings an installed plug-in declares as its own."""
    owned = {}
    for name in plugin_names():
        for field in find_plugin(name).settings:
            owned[field] = name
    return owned

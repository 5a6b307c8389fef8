"""Config files, --print-config, grouped help with resolved defaults, tracking flags."""

import json
import struct

import pytest

from ray_app.cli import build_parser, main
from tests.test_sinks import FakeWandb
from tests.test_train_e2e import cli
from training.config import ConfigError, config_from_args
from training.config_cli import SECTIONS, config_text, load_config_file, resolve, section_of
from training.sinks import run_sinks

TOML = """
[run]
total_env_steps = 30000
window_env_steps = 5000
seed = 7
[env]
env = "gym:CartPole-v1"
[ppo]
ppo_learning_rate = 0.001
ppo_num_envs = 16
ppo_norm_adv = false
[policy]
policy_hidden = [32, 32]
policy_kwargs = {activation = "relu"}
[logging]
wandb_tags = ["a", "b"]
"""

YAML = """
run: {total_env_steps: 30000, window_env_steps: 5000, seed: 7}
env: {env: "gym:CartPole-v1"}
ppo: {ppo_learning_rate: 0.001, ppo_num_envs: 16, ppo_norm_adv: false}
policy:
  policy_hidden: "32,32"
  policy_kwargs: {activation: relu}
logging: {wandb_tags: "a,b"}
"""


def parse(*argv):
    return build_parser(["train", *argv]).parse_args(["train", *argv])


def test_toml_and_yaml_files_give_the_same_settings_and_round_trip(tmp_path):
    (tmp_path / "c.toml").write_text(TOML)
    (tmp_path / "c.yaml").write_text(YAML)
    from_toml = resolve(parse("--config", str(tmp_path / "c.toml")))
    from_yaml = resolve(parse("--config", str(tmp_path / "c.yaml")))
    assert from_toml == from_yaml
    assert (from_toml.env, from_toml.seed, from_toml.ppo_learning_rate, from_toml.ppo_num_envs) == (
        "gym:CartPole-v1", 7, 0.001, 16)
    assert from_toml.policy_hidden == "32,32" and from_toml.policy_kwargs == {"activation": "relu"}
    assert from_toml.ppo_norm_adv is False and from_toml.wandb_tags == "a,b"
    # the preset fills what the file leaves out (CartPole's preset: 32-step rollouts)
    assert from_toml.ppo_rollout_steps == config_from_args({"env": "gym:CartPole-v1"}).ppo_rollout_steps
    # what --print-config prints (and config.json holds) is itself a config file giving the same run
    (tmp_path / "config.json").write_text(config_text(from_toml))
    assert resolve(parse("--config", str(tmp_path / "config.json"))) == from_toml


def test_flags_override_the_file_and_the_file_overrides_the_preset(tmp_path):
    (tmp_path / "c.toml").write_text(TOML)
    cfg = resolve(parse("--config", str(tmp_path / "c.toml"), "--seed", "3", "--ppo-norm-adv"))
    assert cfg.seed == 3 and cfg.ppo_norm_adv is True and cfg.ppo_num_envs == 16
    # the env a flag names picks the preset under the file
    cfg = resolve(parse("--config", str(tmp_path / "c.toml"), "--env", "prospector"))
    assert cfg.env == "prospector" and cfg.ppo_num_envs == 16 and cfg.env_rules == "v2"


@pytest.mark.parametrize("text, message", [
    ("[ppo]\nppo_lerning_rate = 1\n", "unknown setting 'ppo_lerning_rate' in [ppo]"),
    ("[ppo]\nseed = 1\n", "seed belongs in [run], not [ppo]"),
    ("[run\n", "not valid TOML"),
    ("[run]\ntotal_env_steps = -5\n", "--total-env-steps"),
])
def test_bad_files_are_rejected_naming_the_file_and_the_key(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        resolve(parse("--config", str(tmp_path / "c.toml")))


def test_every_setting_has_a_section():
    from training.config_cli import FIELDS

    assert {section_of(name) for name in FIELDS} == set(SECTIONS)
    assert load_config_file  # the loader is the public entry for notebooks too


def test_print_config_prints_what_the_run_resolves_and_exits(tmp_path, capsys):
    assert main(["train", "--env", "gym:CartPole-v1", "--seed", "5", "--run-id", "x", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(config_text(config_from_args({"env": "gym:CartPole-v1", "seed": 5, "run_id": "x"})))
    assert not (tmp_path / "x").exists()


def test_help_groups_settings_and_shows_defaults_resolved_for_the_env(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--env", "prospector", "--help"])
    game = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--env", "training.envs.examples:reach", "--help"])
    reach = capsys.readouterr().out
    for section in SECTIONS:
        assert f"{section} settings" in game
    assert "defaults as resolved for --env prospector" in game
    num_envs = config_from_args({"env": "prospector"}).ppo_num_envs
    assert f"--ppo-num-envs ENVS   default: {num_envs}" in game and "default: 8" not in game.split("--ppo-num-envs")[1][:40]
    assert "settings only the env 'prospector' uses" in game
    assert "--ppo-rollout-steps STEPS\n                        default: 256" in reach  # continuous defaults
    assert "--async-rollouts, --no-async-rollouts\n                        overlap" in game


def test_wandb_entity_group_and_tags_reach_wandb_init(tmp_path, monkeypatch):
    import sys

    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    cfg = config_from_args({"env": "gym:CartPole-v1", "wandb_mode": "offline", "wandb_entity": "team",
                            "wandb_group": "sweep-1", "wandb_tags": "a, b", "run_id": "r"})
    sink, _ = run_sinks(cfg, tmp_path)
    sink.finish()
    init = fake.calls[0][1]
    assert (init["entity"], init["group"], init["tags"], init["project"]) == ("team", "sweep-1", ["a", "b"],
                                                                            "prospector-trainer")
    assert config_from_args({"env": "prospector"}).wandb_project == "asteroid-prospector"  # the game's only


def _scalars(event_dir):
    """{tag: [(step, value)]} from TensorBoard event files (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event

    out = {}
    for path in event_dir.glob("events.out.tfevents.*"):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.mark.slow
def test_tensorboard_gets_every_window_row(tmp_path):
    res = cli("train", "--env", "gym:CartPole-v1", "--trainer-backend", "random", "--total-env-steps", "3072",
              "--window-env-steps", "1024", "--ppo-num-envs", "4", "--ppo-num-workers", "1",
              "--ppo-rollout-steps", "256", "--tensorboard", "--run-root", str(tmp_path), "--run-id", "r")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics" / "windows.jsonl").read_text().splitlines()]
    scalars = _scalars(tmp_path / "r" / "tensorboard")
    assert [step for step, _ in scalars["return_mean"]] == [r["env_steps_total"] for r in rows]
    assert [v for _, v in scalars["reward_sum"]] == pytest.approx([r["reward_sum"] for r in rows])
    # and the printed config is the file the run wrote
    printed = cli("train", "--env", "gym:CartPole-v1", "--trainer-backend", "random", "--total-env-steps", "3072",
                  "--window-env-steps", "1024", "--ppo-num-envs", "4", "--ppo-num-workers", "1",
                  "--ppo-rollout-steps", "256", "--tensorboard", "--run-root", str(tmp_path), "--run-id", "r",
                  "--print-config")
    assert printed.returncode == 0 and printed.stdout == (tmp_path / "r" / "config.json").read_text()

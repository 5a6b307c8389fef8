"""Config resolution and validation: presets fill gaps, explicit flags win, bad input names its flag."""

import argparse

import pytest

from training.config import ConfigError, TrainConfig, config_from_args, preset_for
from training.config_cli import add_train_args
from training.envs.plugin import find_plugin


def parse(*argv):
    p = argparse.ArgumentParser()
    add_train_args(p)
    return config_from_args(p.parse_args(list(argv)))


def test_contract_defaults_for_an_env_without_preset():
    cfg = parse("--env", "gym:Acrobot-v1")
    assert (cfg.ppo_num_envs, cfg.ppo_num_workers, cfg.ppo_rollout_steps) == (8, 4, 128)
    assert (cfg.ppo_num_minibatches, cfg.ppo_update_epochs, cfg.ppo_learning_rate) == (4, 4, 3e-4)
    assert (cfg.ppo_gamma, cfg.ppo_gae_lambda, cfg.ppo_clip_coef) == (0.99, 0.95, 0.2)
    assert (cfg.ppo_ent_coef, cfg.ppo_vf_coef, cfg.ppo_max_grad_norm) == (0.01, 0.5, 0.5)
    assert (cfg.run_root, cfg.seed, cfg.env_time_max, cfg.checkpoint_every_windows) == ("runs", 0, None, 1)
    assert cfg.wandb_mode == "disabled" and cfg.wandb_project == "prospector-trainer"
    assert cfg.eval_seed_offset == 100000 and cfg.eval_policy_deterministic is True
    assert cfg.policy == "default" and cfg.policy_kwargs == {} and cfg.env_rules is None


def test_the_first_versions_defaults_hold_for_the_game():
    cfg = parse()  # the first version's CLI had no --env: the game
    assert cfg.env == "prospector" and cfg.env_time_max == 20000 and cfg.env_rules == "v2"
    assert cfg.wandb_project == "asteroid-prospector"


def test_preset_fills_unset_flags_and_explicit_flags_win():
    cfg = parse("--env", "gym:CartPole-v1", "--total-env-steps", "200000", "--window-env-steps", "10000")
    assert cfg.ppo_update_epochs == preset_for("gym:CartPole-v1")["ppo_update_epochs"] == 20
    assert cfg.total_env_steps == 200000
    cfg = parse("--env", "gym:CartPole-v1", "--ppo-update-epochs", "3", "--total-env-steps", "1000",
                "--window-env-steps", "500")
    assert cfg.ppo_update_epochs == 3


def test_base_config_is_not_overridden_by_preset():
    base = TrainConfig(env="prospector", ppo_num_envs=16, ppo_num_workers=2, total_env_steps=5000,
                       window_env_steps=1000).to_dict()
    cfg = config_from_args({"seed": 3}, base=base)
    assert cfg.ppo_num_envs == 16 and cfg.seed == 3


def test_seed_cli_eval_flags():
    assert parse("--env", "gym:Acrobot-v1", "--eval-policy-stochastic").eval_policy_deterministic is False
    assert parse("--env", "gym:Acrobot-v1", "--flush-partial-window").flush_partial_window is True


@pytest.mark.parametrize("argv, flag", [
    (["--total-env-steps", "0"], "--total-env-steps"),
    (["--total-env-steps", "-5"], "--total-env-steps"),
    (["--window-env-steps", "0"], "--window-env-steps"),
    (["--total-env-steps", "1000", "--window-env-steps", "5000"], "--window-env-steps"),
    (["--ppo-num-envs", "10", "--ppo-num-workers", "4"], "--ppo-num-envs"),
    (["--ppo-num-envs", "6", "--ppo-num-workers", "2", "--ppo-rollout-steps", "5", "--ppo-num-minibatches", "4"],
     "--ppo-num-minibatches"),
    (["--ppo-gamma", "1.5"], "--ppo-gamma"),
    (["--keep-checkpoints", "-1"], "--keep-checkpoints"),
    (["--ppo-learning-rate", "0"], "--ppo-learning-rate"),
    (["--policy-hidden", "64,x"], "--policy-hidden"),
    (["--eval-milestone-return-thresholds", "1,a"], "--eval-milestone-return-thresholds"),
])
def test_invalid_config_names_the_flag(argv, flag):
    with pytest.raises(ConfigError) as e:
        parse("--env", "gym:Acrobot-v1", *argv)
    assert e.value.flag == flag
    assert str(e.value).startswith(flag)


def test_unknown_choice_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        parse("--learner-device", "tpu")
    assert e.value.code == 2
    assert "--learner-device" in capsys.readouterr().err


def test_an_envs_own_settings_are_checked_by_its_plugin():
    with pytest.raises(ConfigError) as e:
        parse("--env-rules", "v3")  # the game's rule sets are v1 and v2
    assert e.value.flag == "--env-rules"
    assert parse("--env", "gym:Acrobot-v1", "--env-rules", "v3").env_rules == "v3"  # an env without rules ignores it


def test_policy_kwargs_are_a_json_object_and_the_policy_must_be_found():
    assert parse("--env", "gym:Acrobot-v1", "--policy-kwargs", '{"hidden_size": 8}').policy_kwargs == {"hidden_size": 8}
    assert parse("--env", "gym:Acrobot-v1", "--policy-arch", "pufferlib.models:Default").policy == "pufferlib.models:Default"  # the old name
    for argv, name in ((["--policy-kwargs", "{bad"], "--policy-kwargs"), (["--policy-kwargs", "[1, 2]"], "--policy-kwargs"),
                       (["--policy", "no_such_name"], "--policy"), (["--policy", "no_such_module:f"], "--policy")):
        with pytest.raises(ConfigError) as e:
            parse("--env", "gym:Acrobot-v1", *argv)
        assert e.value.flag == name, argv


def test_derived_values():
    cfg = TrainConfig(ppo_num_envs=8, ppo_num_workers=4, ppo_rollout_steps=128, total_env_steps=2000)
    assert cfg.envs_per_worker == 2 and cfg.steps_per_round == 1024 and cfg.total_rounds == 2
    assert TrainConfig(policy_hidden="64, 32").hidden_sizes == (64, 32)


KICK = ("--kickstart-teacher", "cautious_scanner", "--kickstart-steps", "4000000")


def test_a_presets_teacher_and_prior_can_be_switched_off(monkeypatch):
    preset = find_plugin("prospector").preset
    for key, value in dict(kickstart_teacher="cautious_scanner", kickstart_steps=1000, kickstart_rollin_steps=500,
                           policy_prior="greedy_miner").items():
        monkeypatch.setitem(preset, key, value)
    on = parse("--env", "prospector")
    assert (on.kickstart_teacher, on.kickstart_rollin_steps, on.policy_prior) == ("cautious_scanner", 500, "greedy_miner")
    off = parse("--env", "prospector", "--kickstart-teacher", "none", "--policy-prior", "none")
    assert off.kickstart_teacher is None and off.kickstart_rollin_steps == 0  # the roll-ins go with it
    assert off.policy_prior is None


def test_kickstart_teacher_is_a_behaviour_the_env_offers_or_a_reference():
    assert parse("--env", "prospector", *KICK).kickstart_teacher == "cautious_scanner"
    with pytest.raises(ConfigError) as e:
        parse("--env", "prospector", "--kickstart-teacher", "no_such_bot", "--kickstart-steps", "1000")
    assert e.value.flag == "--kickstart-teacher"
    with pytest.raises(ConfigError):
        parse("--env", "gym:Acrobot-v1", "--kickstart-teacher", "greedy_miner")  # a name only the game offers
    ref = "prospector_game.bots:greedy_miner"
    assert parse("--env", "gym:Acrobot-v1", "--kickstart-teacher", ref, "--kickstart-steps", "10").kickstart_teacher == ref


def test_kickstart_warmup_needs_a_teacher_and_ends_before_its_weight_does():
    assert parse("--env", "prospector", *KICK, "--kickstart-warmup-steps", "100000").kickstart_warmup_steps == 100_000
    for bad in (["--kickstart-teacher", "none", "--kickstart-warmup-steps", "1000"],
                [*KICK, "--kickstart-warmup-steps", "4000000"],
                [*KICK, "--kickstart-warmup-steps", "-5"]):
        with pytest.raises(ConfigError) as e:
            parse("--env", "prospector", *bad)
        assert e.value.flag == "--kickstart-warmup-steps", bad


def test_kickstart_rollins_need_a_teacher_and_a_non_negative_length():
    assert parse("--env", "prospector", *KICK, "--kickstart-rollin-steps", "8000").kickstart_rollin_steps == 8000
    for bad in (["--kickstart-teacher", "none", "--kickstart-rollin-steps", "1000"],
                [*KICK, "--kickstart-rollin-steps", "-5"]):
        with pytest.raises(ConfigError) as e:
            parse("--env", "prospector", *bad)
        assert e.value.flag == "--kickstart-rollin-steps", bad
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(ConfigError) as e:
            parse("--env", "prospector", "--kickstart-rollin-prob", bad)
        assert e.value.flag == "--kickstart-rollin-prob", bad

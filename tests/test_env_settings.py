"""--env-kwargs (arguments for an env's factory or gymnasium.make) and env reports (numeric infos
without an env_index, averaged per window into env/<key>)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.config import ConfigError, config_from_args
from training.envs.env_spec import EnvSpecError, check_env_spec
from training.envs.registry import make_vecenv
from training.rollout import RolloutCollector
from training.windowing import WindowAggregator

REPO = Path(__file__).resolve().parents[1]
RECALL = "training.envs.partial:recall"


def test_env_kwargs_reach_a_factory_and_gymnasium_make():
    env = make_vecenv(RECALL, 2, 0, kwargs={"length": 4})
    batch, episodes = RolloutCollector(env, 12, seed=0).collect()
    assert [ep["episode_length"] for ep in episodes] == [4] * 6
    env = make_vecenv("gym:CartPole-v1", 2, 0, kwargs={"max_episode_steps": 5})
    batch, episodes = RolloutCollector(env, 30, seed=0).collect()
    assert episodes and max(ep["episode_length"] for ep in episodes) <= 5
    assert any(ep["truncated"] for ep in episodes)


def test_env_kwargs_a_factory_does_not_take_are_named_before_anything_starts():
    with pytest.raises(EnvSpecError, match=r"--env-kwargs: .* takes no argument 'lenght'"):
        check_env_spec(RECALL, {"lenght": 4})  # what the driver calls first
    with pytest.raises(EnvSpecError, match=r"--env-kwargs: .* takes no argument 'lenght'"):
        make_vecenv(RECALL, 2, 0, kwargs={"lenght": 4})


def test_env_kwargs_must_be_a_json_object():
    with pytest.raises(ConfigError, match="--env-kwargs: not valid JSON"):
        config_from_args({"env": RECALL, "env_kwargs": "{length: 4}"})
    with pytest.raises(ConfigError, match="--env-kwargs: must be a JSON object"):
        config_from_args({"env": RECALL, "env_kwargs": "[4]"})
    assert config_from_args({"env": RECALL, "env_kwargs": '{"length": 4}'}).env_kwargs == {"length": 4}


def test_reports_are_weighted_by_the_episodes_they_cover():
    agg = WindowAggregator("r", window_env_steps=4)
    rows = agg.add_round(4, 0.0, [], None, 1.0, step_rewards=[0.0] * 4, env_reports=[
        {"score": 10.0, "n": 3, "_step": 0},  # three episodes averaging 10
        {"score": 2.0, "n": 1, "_step": 1},
        {"perf": 0.5, "_step": 3},             # no n: weight 1
    ])
    assert rows[0]["env/score"] == pytest.approx((10 * 3 + 2) / 4)
    assert rows[0]["env/perf"] == 0.5 and "env/n" not in rows[0]
    rows = agg.add_round(4, 0.0, [], None, 1.0, step_rewards=[0.0] * 4)
    assert rows[0]["env/score"] is None, "a key seen once stays a column"


def test_reports_land_in_the_window_of_their_step_and_survive_a_resume():
    agg = WindowAggregator("r", window_env_steps=2)
    agg.add_round(1, 0.0, [], None, 1.0, env_reports=[{"score": 4.0, "n": 2}])
    resumed = WindowAggregator("r", window_env_steps=2)
    resumed.load_state_dict(json.loads(json.dumps(agg.state_dict())))
    rows = resumed.add_round(1, 0.0, [], None, 1.0, env_reports=[{"score": 1.0, "n": 1}])
    assert rows[0]["env/score"] == pytest.approx(3.0)


def test_a_puffer_style_env_report_is_collected_with_its_step():
    from training.envs.examples import ReportingEnv

    env = ReportingEnv(num_envs=2, report_every=3)
    collector = RolloutCollector(env, 10, seed=0)
    _, episodes = collector.collect()
    assert [r["_step"] for r in collector.reports] == [2, 5, 8]
    assert collector.reports[0] == {"score": 1.0, "n": 6.0, "_step": 2}


def train(*args):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "ray_app", "train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_real_env_run_records_its_kwargs_and_reports(tmp_path):
    """HalfCheetah-v5 reports x_velocity, reward_forward and reward_ctrl in every step's infos
    (PufferLib's vector env averages them over its envs); with --env-kwargs it runs shorter
    episodes, recorded in config.json. A keyword gymnasium.make rejects fails in one line."""
    res = train("--env", "gym:HalfCheetah-v5", "--env-kwargs", '{"max_episode_steps": 100, "ctrl_cost_weight": 0.2}',
                "--ppo-num-envs", "2", "--ppo-num-workers", "1", "--ppo-rollout-steps", "128", "--ppo-num-minibatches",
                "4", "--ppo-update-epochs", "1", "--total-env-steps", "1024", "--window-env-steps", "512",
                "--run-root", str(tmp_path), "--run-id", "hc")
    assert res.returncode == 0, res.stderr[-3000:]
    run_dir = tmp_path / "hc"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env_kwargs"] == {"max_episode_steps": 100, "ctrl_cost_weight": 0.2}
    rows = [json.loads(line) for line in (run_dir / "metrics" / "windows.jsonl").read_text().splitlines()]
    assert all(r["episode_length_mean"] == 100 for r in rows)
    for key in ("env/x_velocity", "env/reward_ctrl"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert all(r["env/reward_ctrl"] < 0 for r in rows)

    res = train("--env", "gym:CartPole-v1", "--env-kwargs", '{"bogus": 4}', "--run-root", str(tmp_path),
                "--run-id", "bad", "--total-env-steps", "2048", "--window-env-steps", "1024")
    assert res.returncode == 2, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --env 'gym:CartPole-v1': the env could not be built with --env-kwargs") and \
        "unexpected keyword argument 'bogus'" in last, res.stderr[-2000:]

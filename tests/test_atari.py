"""Atari from pixels (training/envs/atari.py): ALE/Breakout-v5 through ale-py's native vector env,
preprocessed in C++ (grey, 84x84, 4 frames stacked, 4 frames a decision), behind PufferLib's
buffers; the `breakout` plug-in with CleanRL's Atari PPO preset; a short run through the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("ale_py")

from tests.test_train_e2e import cli  # noqa: E402
from training.envs.registry import make_vecenv  # noqa: E402


def play(env, steps, seed=0):
    """Random actions for ``steps`` vector steps: the arrays of every step and every info dict."""
    rng = np.random.default_rng(seed)
    out = dict(obs=[], rew=[], term=[], trunc=[], infos=[])
    for _ in range(steps):
        obs, rew, term, trunc, infos = env.step(rng.integers(0, env.single_action_space.n, env.num_agents))
        for key, value in zip(("obs", "rew", "term", "trunc"), (obs, rew, term, trunc)):
            out[key].append(np.array(value, copy=True))
        out["infos"].append(list(infos))
    return {k: (v if k == "infos" else np.stack(v)) for k, v in out.items()}


def test_spaces_buffers_and_reset_semantics():
    from gymnasium import spaces

    env = make_vecenv("breakout", 3, seed=0)
    try:
        assert env.single_observation_space == spaces.Box(0, 255, (4, 84, 84), np.uint8)
        assert env.single_action_space == spaces.Discrete(4)  # v5's minimal set: NOOP, FIRE, RIGHT, LEFT
        assert env.num_agents == 3 and env.autoreset_same_step is True
        obs, infos = env.reset(seed=0)
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == np.uint8 and infos == []
        assert obs.max() > 0  # a real frame, not an empty buffer
        assert env.final_observations.shape == obs.shape and env.final_observations.dtype == np.uint8
        assert env.rewards.dtype == np.float32
    finally:
        env.close()


def test_same_seed_same_trajectory_other_seed_another():
    """Sticky actions and no-op starts are random: the seed fixes them (env i plays seed + i)."""
    runs = []
    for seed in (7, 7, 8):
        env = make_vecenv("breakout", 2, seed=seed)
        try:
            first, _ = env.reset(seed=seed)
            runs.append(dict(play(env, 150, seed=1), first=first.copy()))
        finally:
            env.close()
    a, b, c = runs
    for key in ("first", "obs", "rew", "term", "trunc"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["infos"] == b["infos"]
    assert not np.array_equal(a["obs"], c["obs"])


@pytest.mark.parametrize("clip", [True, False])
def test_episodes_end_and_report_the_game_score(clip):
    """Every finished episode comes with one info dict, ``{"env_index": i, "score": s}``, the
    unclipped game score; the trainer's rewards are its sign with ``clip_rewards`` (the default),
    the score itself without. After an end the observation is the next game's first, and the one
    the episode ended on is in ``final_observations``."""
    from training.envs.atari import breakout

    env = breakout(num_envs=4, seed=3, clip_rewards=clip)
    try:
        env.reset(seed=3)
        rng = np.random.default_rng(0)
        ret, ended = np.zeros(4), []
        for _ in range(3000):
            obs, rew, term, trunc, infos = env.step(rng.integers(0, 4, 4))
            ret += rew
            done = np.flatnonzero(term | trunc)
            assert sorted(d["env_index"] for d in infos) == list(done)
            for d in infos:
                i = d["env_index"]
                assert set(d) == {"env_index", "score"}
                assert d["score"] >= ret[i] if clip else d["score"] == ret[i]
                assert not np.array_equal(env.final_observations[i], obs[i])
                ended.append((d["score"], ret[i]))
                ret[i] = 0.0
            if clip:
                assert set(np.unique(rew)) <= {0.0, 1.0}
            if len(ended) >= 8:
                break
        assert len(ended) >= 8, "random Breakout play ends a game within ~200 decisions"
        assert any(score > 0 for score, _ in ended)
    finally:
        env.close()


def test_plugin_preset_and_light_import():
    """The plug-in carries CleanRL's Atari settings; its module loads neither ale_py, PufferLib nor
    torch (the driver reads every plug-in)."""
    from training.config import config_from_args

    cfg = config_from_args({"env": "breakout"})
    assert (cfg.ppo_num_envs * cfg.ppo_rollout_steps, cfg.ppo_num_minibatches, cfg.ppo_update_epochs) == (1024, 4, 4)
    assert (cfg.ppo_learning_rate, cfg.ppo_clip_coef, cfg.ppo_ent_coef, cfg.ppo_vf_coef) == (2.5e-4, 0.1, 0.01, 0.5)
    assert (cfg.ppo_gamma, cfg.ppo_gae_lambda, cfg.hidden_sizes) == (0.99, 0.95, (512,))
    code = ("import sys, training.envs.atari; from training.envs.plugin import find_plugin; "
            "assert find_plugin('breakout') is training.envs.atari.BREAKOUT; "
            "print(sorted(m for m in ('torch', 'pufferlib', 'ale_py') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.slow
def test_breakout_trains_through_the_cli(tmp_path):
    """A short run of the real CLI with the preset and the default policy (the CNN, for uint8
    images), its rounds shortened to 64 steps and one epoch to keep it quick: the run completes,
    its windows report the game score beside the clipped return, and ``eval`` plays the
    checkpoint with the score column and the random baseline."""
    res = cli("train", "--env", "breakout", "--total-env-steps", "2048", "--window-env-steps", "1024",
              "--ppo-rollout-steps", "64", "--ppo-update-epochs", "1", "--run-root", str(tmp_path), "--run-id", "r",
              timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    run_dir = tmp_path / "r"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["policy"], config["policy_hidden"], config["ppo_clip_coef"]) == ("default", "512", 0.1)
    rows = [json.loads(line) for line in (run_dir / "metrics" / "windows.jsonl").read_text().splitlines()]
    assert [r["env_steps_end"] for r in rows] == [1024, 2048]
    assert sum(r["episodes_completed"] for r in rows) > 0  # random play ends a game in ~200 decisions
    scored = [r for r in rows if r["episodes_completed"]]
    assert all(r["score_mean"] >= r["return_mean"] >= 0 for r in scored)
    assert rows[-1]["value_loss"] is not None

    from training.evaluate import load_policy

    policy, _ = load_policy(run_dir / "checkpoints" / "ckpt_000001.pt")
    assert type(policy.policy).__name__ == "CNNPolicy"
    # stochastic: an untrained argmax may never press FIRE, and a served ball is what ends a game
    res = cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "ckpt_000001.pt"), "--episodes", "3",
              "--stochastic", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    header = next(line for line in res.stdout.splitlines() if line.startswith("name"))
    assert "score" in header.split()
    assert any(line.startswith("random ") for line in res.stdout.splitlines())

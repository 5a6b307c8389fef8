"""training/evaluate.py and `prospector eval`: one episode per seed, summaries, the table, errors."""

from __future__ import annotations

import json
import math

import gymnasium
import numpy as np
import pytest
import torch

from ray_app.cli import main
from prospector_game.bot_eval import evaluate_bots
from prospector_game.bots import BOTS
from prospector_game.env import ProspectorEnv
from training.evaluate import (comparison_table, evaluate_policy, load_policy, make_act_fn,
                               summarize)
from training.agent import mlp_agent
from training.checkpoints import CHECKPOINT_FORMAT_VERSION, CheckpointError

TIME_MAX = 120  # short episodes keep every test here well under a second or two


def _cli(argv):
    return main(argv)  # the real `prospector` CLI: one-line errors, exit code 2


def _policy(seed=0):
    torch.manual_seed(seed)
    env = ProspectorEnv(1)
    return mlp_agent(env.single_observation_space, env.single_action_space, hidden=(16, 16))


def _checkpoint(path, policy=None, random_backend=False):
    policy = policy or _policy()
    torch.save({
        "format_version": CHECKPOINT_FORMAT_VERSION, "window_id": 2, "env_steps_total": 1234,
        "config": {"env": "prospector", "env_rules": "v2", "env_time_max": TIME_MAX, "seed": 0,
                   "eval_seed_offset": 100_000},
        "policy_spec": policy.spec,
        "learner": None if random_backend else {"policy_state": policy.state_dict()},
    }, path)
    return path


def test_summarize_hand_example():
    eps = [{"episode_return": r, "survival": s, "net_profit": p, "profit_per_tick": p / 10, "ticks": 10}
           for r, s, p in [(1, 1, 10), (2, 0, 20), (3, 1, 30), (4, 1, 40), (5, 0, 50)]]
    s = summarize(eps)
    half = 1.96 * math.sqrt(2.5) / math.sqrt(5)  # sample sd of 1..5 is sqrt(2.5)
    assert s["episodes"] == 5 and s["return_mean"] == pytest.approx(3.0)
    assert s["return_median"] == pytest.approx(3.0)
    assert s["return_ci95_low"] == pytest.approx(3.0 - half) and s["return_ci95_high"] == pytest.approx(3.0 + half)
    assert s["return_ci95_low"] == pytest.approx(1.614071, abs=1e-6)  # 3 - 1.96 * 0.707107
    assert s["survival_mean"] == pytest.approx(0.6)  # every number the env reports, as a mean
    assert s["net_profit_mean"] == pytest.approx(30.0) and s["profit_per_tick_mean"] == pytest.approx(3.0)
    assert s["ticks_mean"] == pytest.approx(10.0) and "episode_return_mean" not in s
    one = summarize([{"episode_return": 2.0, "episode_length": 7, "seed": 3, "note": "x"}])
    assert one["return_ci95_low"] is None and one["episode_length_mean"] == 7
    assert "survival_mean" not in one and "seed_mean" not in one and "note_mean" not in one


def test_comparison_table_is_aligned():
    a = summarize([{"episode_return": r} for r in (1.0, 2.0, 4.0)])
    b = summarize([{"episode_return": -10.5, "survival": 1, "net_profit": 3, "profit_per_tick": 0.1, "ticks": 5}] * 2)
    lines = comparison_table({"policy": a, "a_much_longer_name": b}).splitlines()
    assert len(lines) == 4 and len({len(ln) for ln in lines}) == 1
    assert lines[2].startswith("policy ") and lines[3].startswith("a_much_longer_name")
    assert "[" in lines[2] and "-10.500" in lines[3]


def test_load_policy_roundtrip_and_errors(tmp_path):
    policy = _policy(3)
    loaded, ckpt = load_policy(_checkpoint(tmp_path / "ckpt_000002.pt", policy))
    obs = torch.rand(5, 260)
    assert torch.equal(loaded.act(obs, deterministic=True)[0], policy.act(obs, deterministic=True)[0])
    assert ckpt["window_id"] == 2
    bad = tmp_path / "ckpt_000009.pt"
    bad.write_bytes(b"not a checkpoint at all")
    rnd = _checkpoint(tmp_path / "ckpt_000004.pt", random_backend=True)
    for path, why in ((tmp_path / "nope.pt", "not found"), (bad, "corrupt"), (rnd, "random backend")):
        with pytest.raises(CheckpointError, match=why) as err:
            load_policy(path)
        assert str(path) in str(err.value)


def test_one_episode_per_seed_matches_bot_eval():
    # Same seeds and the same actions must give the bot evaluator's numbers exactly.
    got = evaluate_policy(BOTS["greedy_miner"], "prospector", 3, 100_000, "v2", TIME_MAX)
    assert [e["seed"] for e in got] == [100_000, 100_001, 100_002]
    assert [e["env_index"] for e in got] == [0, 1, 2]
    ref = evaluate_bots(["greedy_miner"], episodes=3, seed0=100_000, time_max=TIME_MAX)["greedy_miner"]
    s = summarize(got)
    assert s["return_mean"] == pytest.approx(ref["return_mean"], abs=1e-9)
    assert s["net_profit_mean"] == pytest.approx(ref["net_profit_mean"], abs=1e-9)
    assert s["ticks_mean"] == pytest.approx(ref["ticks_mean"])
    # a seed's episode does not depend on the batch around it
    alone = evaluate_policy(BOTS["greedy_miner"], "prospector", 1, 100_001, "v2", TIME_MAX)[0]
    assert alone["episode_return"] == pytest.approx(got[1]["episode_return"], abs=1e-12)


def test_gym_env_seeds_follow_seed0():
    def left(obs):
        return np.zeros(len(obs), dtype=np.int64)

    got = evaluate_policy(left, "gym:CartPole-v1", 3, 50, max_steps=600)
    for i, ep in enumerate(got):
        env = gymnasium.make("CartPole-v1")
        env.reset(seed=50 + i)
        n, done = 0, False
        while not done:
            _, _, term, trunc, _ = env.step(0)
            n, done = n + 1, term or trunc
        assert ep["episode_length"] == n and ep["episode_return"] == pytest.approx(n)
        assert ep["seed"] == 50 + i and ep["terminated"] == 1


def test_stochastic_is_seeded_and_deterministic_repeats():
    policy = _policy(1)
    space = ProspectorEnv(1).single_action_space

    def run(deterministic, seed):
        act = make_act_fn(policy, space, deterministic=deterministic, seed=seed)
        return [e["episode_return"] for e in evaluate_policy(act, "prospector", 2, 7, "v2", 60)]

    assert run(False, 5) == run(False, 5)
    assert run(True, 0) == run(True, 99)  # argmax ignores the sampling seed


def test_cli_eval_table_and_json(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt_000002.pt")
    out = tmp_path / "eval" / "result.json"
    assert _cli(["eval", "--checkpoint", str(ckpt), "--episodes", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = {ln.split()[0] for ln in text.splitlines() if ln.strip()}
    names = ["policy", *BOTS]
    assert set(names) <= rows and len(names) == 7
    data = json.loads(out.read_text())
    assert list(data) == names
    for s in data.values():
        assert s["episodes"] == 3
        assert s["return_ci95_low"] <= s["return_mean"] <= s["return_ci95_high"]
    # the table prints the JSON's numbers
    assert f"{data['hold']['return_mean']:.3f}" in text


@pytest.mark.parametrize("kind", ["missing", "corrupt", "random"])
def test_cli_eval_user_errors(tmp_path, capsys, kind):
    path = tmp_path / "ckpt_000001.pt"
    if kind == "corrupt":
        path.write_bytes(b"\x00garbage")
    elif kind == "random":
        _checkpoint(path, random_backend=True)
    assert _cli(["eval", "--checkpoint", str(path), "--episodes", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0]


def test_cli_eval_rejects_zero_episodes(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt_000002.pt")
    assert _cli(["eval", "--checkpoint", str(ckpt), "--episodes", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --episodes")


def test_temperature_samples_from_scaled_logits():
    """act(temperature=T) draws exactly what the same policy with its logits divided by T draws
    (same generator state, so the same Gumbel noise); T = 1 is the policy itself."""
    policy = _policy(3)
    obs = torch.as_tensor(np.stack([ProspectorEnv(1).reset(seed=s)[0][0] for s in range(64)]))
    scaled = _policy(3)
    with torch.no_grad():
        last = scaled.policy.actor[-1]
        last.weight.div_(0.25), last.bias.div_(0.25)

    def draw(p, **kw):
        return p.act(obs, generator=torch.Generator().manual_seed(4), **kw)[0]

    assert torch.equal(draw(policy, temperature=0.25), draw(scaled))
    assert torch.equal(draw(policy, temperature=1.0), draw(policy))
    assert not torch.equal(draw(policy, temperature=0.25), draw(policy))
    # very low temperature is the argmax
    assert torch.equal(draw(policy, temperature=1e-6), policy.act(obs, deterministic=True)[0])


def test_temperature_widens_or_narrows_a_gaussian():
    from gymnasium import spaces

    policy = mlp_agent(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), hidden=(8,))
    mean, log_std = policy(torch.zeros(1, 3))[0]
    t_mean, t_log_std = policy.dist.tempered((mean, log_std), 0.5)
    assert torch.equal(t_mean, mean)
    assert torch.allclose(t_log_std.exp(), 0.5 * log_std.exp())


def test_cli_eval_temperature(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "ckpt_000002.pt")
    assert _cli(["eval", "--checkpoint", str(ckpt), "--episodes", "2", "--no-baselines", "--temperature", "0.5"]) == 0
    assert "stochastic (seeded, temperature 0.5)" in capsys.readouterr().out
    assert _cli(["eval", "--checkpoint", str(ckpt), "--episodes", "2", "--temperature", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --temperature must be > 0")

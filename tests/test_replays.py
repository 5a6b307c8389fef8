"""training/replays.py: frames follow the schema, agree with the env, and the index tags follow
the rules of docs/RUN_ARTIFACTS.md."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from prospector_game.env import ProspectorEnv
from training.evaluate import evaluate_policy, make_act_fn
from training.agent import mlp_agent
from training.replay_index import ReplayIndex, window_replay
from prospector_game.replays import RENDER_KEYS as PROSPECTOR_RENDER_KEYS
from training.replays import (EVENTS, FRAME_KEYS, eval_seeds, read_replay, record_best,
                              record_episode, validate_replay, write_replay)

TIME_MAX = 150
THRESHOLDS = {"profit": "100,500,1000", "return": "10,25,50", "survival": "1.0"}


def _policy(seed=0):
    torch.manual_seed(seed)
    env = ProspectorEnv(1)
    return mlp_agent(env.single_observation_space, env.single_action_space, hidden=(16, 16))


def _check_frames(ep):
    frames = ep["frames"]
    assert len(frames) == ep["steps"] > 0
    for k, f in enumerate(frames):
        assert set(FRAME_KEYS) <= set(f) and f["schema_version"] == 1 and f["frame_index"] == k
        assert f["dt"] > 0 and set(f["events"]) <= set(EVENTS)
        if k:
            assert f["t"] == frames[k - 1]["t"] + frames[k - 1]["dt"]
    assert frames[0]["t"] == 0
    assert ep["return_total"] == pytest.approx(sum(f["reward"] for f in frames))
    last = frames[-1]
    assert last["terminated"] or last["truncated"]
    assert not any(f["terminated"] or f["truncated"] for f in frames[:-1])


def test_prospector_episode_matches_the_evaluator(tmp_path):
    policy = _policy(2)
    ep = record_episode(policy, "prospector", 100_003, "v2", TIME_MAX)
    _check_frames(ep)
    f0 = ep["frames"][0]
    assert set(PROSPECTOR_RENDER_KEYS) <= set(f0["render_state"])
    assert len(f0["render_state"]["observation"]) == 260
    assert f0["render_state"]["time_remaining"] == TIME_MAX
    # the same policy on the same seed through the batch evaluator gives the same episode
    act = make_act_fn(policy, ProspectorEnv(1).single_action_space, deterministic=True)
    ref = evaluate_policy(act, "prospector", 1, 100_003, "v2", TIME_MAX)[0]
    assert ep["return_total"] == pytest.approx(ref["episode_return"], abs=1e-6)
    assert ep["profit"] == pytest.approx(ref["net_profit"]) and ep["survival"] == ref["survival"]
    last = ep["frames"][-1]
    assert last["t"] + last["dt"] == ref["ticks"] == ep["ticks"]
    assert last["info"]["after"]["pirate_encounters"] == ref["pirate_encounters"]
    assert ep["terminated"] == bool(ref["terminated"]) and ep["truncated"] == bool(ref["truncated"])
    rel = write_replay(tmp_path, 7, "best", ep)
    assert rel == "replays/replay-000007-best.jsonl.gz"
    assert validate_replay(tmp_path / rel) == []
    assert read_replay(tmp_path / rel) == json.loads(json.dumps(ep["frames"]))


def test_events_agree_with_a_replay_of_the_actions():
    # Random play makes invalid actions; re-run its actions and read the sim's own flags.
    ep = record_episode(None, "prospector", 11, "v2", TIME_MAX)
    _check_frames(ep)
    env = ProspectorEnv(1, time_max=TIME_MAX)
    env.reset_with_seeds([11])
    invalid = 0
    for f in ep["frames"]:
        enc0, credits0 = int(env.sim.encounters[0]), float(env.sim.credits[0])
        _, _, term, trunc, _ = env.step(np.array([f["action"]]))
        if term[0] or trunc[0]:
            break
        assert ("invalid_action" in f["events"]) == bool(env.sim.last_invalid[0])
        assert ("pirate_encounter" in f["events"]) == (int(env.sim.encounters[0]) > enc0)
        assert f["info"]["after"]["credits"] == pytest.approx(float(env.sim.credits[0]))
        if "sale" in f["info"]:
            assert float(env.sim.credits[0]) > credits0
        invalid += bool(env.sim.last_invalid[0])
    assert invalid > 0


def test_max_steps_cut_and_gym_replay(tmp_path):
    ep = record_episode(_policy(), "prospector", 5, "v2", TIME_MAX, max_steps=4)
    assert ep["steps"] == 4 and ep["truncated"] and ep["cut_by_max_steps"]
    assert ep["frames"][-1]["events"][-1] == "truncated"
    assert validate_replay(tmp_path / write_replay(tmp_path, 0, "cut", ep)) == []
    cart = record_episode(None, "gym:CartPole-v1", 3)
    _check_frames(cart)
    assert [f["t"] for f in cart["frames"]] == list(range(cart["steps"]))
    assert all(f["dt"] == 1 and list(f["render_state"]) == ["observation"] for f in cart["frames"])
    assert validate_replay(tmp_path / write_replay(tmp_path, 1, "cart", cart)) == []


def test_validate_replay_finds_problems(tmp_path):
    good = {"schema_version": 1, "frame_index": 0, "t": 0, "dt": 1, "action": 0, "reward": 0.0,
            "terminated": False, "truncated": False, "render_state": {"observation": [0.0]}, "events": []}
    frames = [good, dict(good, frame_index=2, t=1), dict(good, frame_index=2, t=2, dt=0, schema_version=2),
              {k: v for k, v in good.items() if k != "events"} | {"frame_index": 3, "t": 2}]
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(f) + "\n" for f in frames).encode()))
    text = "\n".join(validate_replay(path))
    assert "frame 1: frame_index 2" in text and "frame 2: dt must be > 0" in text
    assert "frame 2: schema_version" in text and "frame 3: missing keys ['events']" in text
    path.write_bytes(b"plain text")
    assert validate_replay(path)
    with pytest.raises(ValueError):
        write_replay(tmp_path, 0, "../escape", {"frames": []})


def test_index_tags_follow_the_rules(tmp_path):
    idx = ReplayIndex(tmp_path, "run-x")
    seq = [  # (return, profit, survival) -> expected tags beyond every_window
        ((5.0, 50.0, 0), ["best_so_far"]),
        ((12.0, 120.0, 1), ["best_so_far", "milestone:profit:100", "milestone:return:10",
                            "milestone:survival:1.0"]),
        ((8.0, 600.0, 1), ["milestone:profit:500"]),
        ((30.0, 90.0, 0), ["best_so_far", "milestone:return:25"]),
        ((30.0, 1500.0, 1), ["milestone:profit:1000"]),  # a tie is not better
        ((60.0, 2000.0, 1), ["best_so_far", "milestone:return:50"]),
    ]
    for w, ((ret, profit, surv), extra) in enumerate(seq):
        entry = idx.add({"window_id": w, "replay_id": "r", "replay_path": f"replays/replay-{w:06d}-r.jsonl.gz",
                         "checkpoint_path": f"checkpoints/ckpt_{w:06d}.pt", "trainer_backend": "puffer_ppo",
                         "return_total": ret, "steps": 10, "profit": profit, "survival": surv,
                         "terminated": False, "truncated": True, "checkpoint_env_steps_total": 100 * w},
                        THRESHOLDS)
        assert sorted(entry["tags"]) == sorted(["every_window"] + extra), w
    data = json.loads((tmp_path / "replay_index.json").read_text())
    assert data["schema_version"] == 1 and data["run_id"] == "run-x" and data["updated_at"]
    assert len(data["entries"]) == 6
    for e in data["entries"]:
        assert {"run_id", "window_id", "replay_id", "replay_path", "checkpoint_path", "tags", "trainer_backend",
                "return_total", "steps", "profit", "survival", "terminated", "truncated",
                "checkpoint_env_steps_total", "created_at"} <= set(e)
    # a resumed run re-adds window 3: windows 3.. are replaced, tags recomputed against 0..2
    again = ReplayIndex(tmp_path, "run-x")
    e = again.add({"window_id": 3, "return_total": 11.0, "profit": 10.0, "survival": 0}, THRESHOLDS)
    assert e["tags"] == ["every_window"]
    assert [x["window_id"] for x in ReplayIndex(tmp_path, "run-x").entries] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="belongs to run"):
        ReplayIndex(tmp_path, "another-run")


def test_record_best_and_window_replay(tmp_path):
    policy = _policy(4)
    seeds = eval_seeds(0, 100_000, 2, 3)
    assert seeds == [102_000, 102_001, 102_002]
    best, summaries = record_best(policy, "prospector", seeds, "v2", TIME_MAX)
    assert [s["seed"] for s in summaries] == seeds
    assert best["return_total"] == max(s["return_total"] for s in summaries)
    cfg = {"env": "prospector", "env_rules": "v2", "env_time_max": TIME_MAX, "seed": 0, "eval_seed_offset": 100_000,
           "eval_replays_per_window": 3, "eval_policy_deterministic": True, "trainer_backend": "puffer_ppo",
           "eval_milestone_profit_thresholds": "100", "eval_milestone_return_thresholds": "10",
           "eval_milestone_survival_thresholds": "1.0"}
    entry = window_replay(tmp_path, "run-y", cfg, 2, policy, "checkpoints/ckpt_000002.pt", 4096)
    assert entry["return_total"] == pytest.approx(best["return_total"]) and entry["seed"] == best["seed"]
    assert entry["replay_path"] == f"replays/replay-000002-seed{best['seed']}.jsonl.gz"
    assert validate_replay(tmp_path / entry["replay_path"]) == []
    assert entry["checkpoint_env_steps_total"] == 4096 and "every_window" in entry["tags"]
    assert window_replay(tmp_path, "run-y", dict(cfg, eval_replays_per_window=0), 3, policy, "c", 1) is None

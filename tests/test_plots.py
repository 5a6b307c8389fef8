"""`prospector plot` and `prospector replay`: PNGs of the promised pixel size; bad input -> exit 2."""

from __future__ import annotations

import gzip
import json

import pytest

from ray_app.cli import main
from prospector_game.bot_eval import evaluate_bots
from prospector_game.bots import BOTS
from training.plots import FIG_SIZE_PX, default_replay_png, reference_returns
from training.replays import record_episode, write_replay

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(argv):
    return main(argv)  # the real `prospector` CLI: one-line errors, exit code 2


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _row(w, **kw):
    row = {"run_id": "fake", "window_id": w, "window_complete": True, "env_steps_start": 1000 * w,
           "env_steps_end": 1000 * (w + 1), "env_steps_in_window": 1000, "env_steps_total": 1000 * (w + 1),
           "return_mean": -5.0 + 2 * w, "sps": 900.0 + 10 * w, "policy_loss": -0.01 * w, "value_loss": 1.0 / (w + 1),
           "entropy": 4.2 - 0.1 * w, "approx_kl": 0.001 * w}
    row.update(kw)
    return row


def _fake_run(tmp_path, env="prospector", bots=True, rows=None, time_max=40):
    run = tmp_path / "runs" / "fake"
    (run / "metrics").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env": env, "env_rules": "v2", "env_time_max": time_max,
                                                 "seed": 0, "eval_seed_offset": 100_000}))
    if bots:
        (run / "reference_returns.json").write_text(json.dumps({"greedy_miner": {"return_mean": 1.5}, "hold": -2.0}))
    rows = rows if rows is not None else [_row(0, return_mean=None), _row(1), _row(2), _row(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if rows:
        text += '{"run_id": "fake", "window_id": 4, "env_st'  # torn last line of a crashed run
    (run / "metrics" / "windows.jsonl").write_text(text)
    return run


def test_learning_curves_png(tmp_path, capsys):
    run = _fake_run(tmp_path)
    assert _cli(["plot", str(run)]) == 0
    png = run / "plots" / "learning_curves.png"
    assert str(png) in capsys.readouterr().out
    assert _png_size(png) == FIG_SIZE_PX == (1200, 900)
    out = tmp_path / "elsewhere.png"
    assert _cli(["plot", str(run), "--out", str(out)]) == 0 and _png_size(out) == FIG_SIZE_PX


def test_reference_lines_from_file_or_played_by_the_envs_hook(tmp_path):
    assert reference_returns(_fake_run(tmp_path / "a")) == {"greedy_miner": 1.5, "hold": -2.0}
    played = reference_returns(_fake_run(tmp_path / "b", bots=False), episodes=2)
    assert set(played) == set(BOTS)
    ref = evaluate_bots(["hold", "greedy_miner"], episodes=2, seed0=100_000, time_max=40)  # the run's eval seeds
    assert played["hold"] == pytest.approx(ref["hold"]["return_mean"])
    assert played["greedy_miner"] == pytest.approx(ref["greedy_miner"]["return_mean"])
    assert reference_returns(_fake_run(tmp_path / "c", env="gym:CartPole-v1", bots=False)) == {}
    assert reference_returns(_fake_run(tmp_path / "d", bots=False), episodes=0) == {}


def test_plot_user_errors(tmp_path, capsys):
    empty = _fake_run(tmp_path, rows=[])
    assert _cli(["plot", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "windows.jsonl" in err[0]
    assert _cli(["plot", str(tmp_path / "no_such_run")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert _cli(["replay", str(tmp_path / "missing.jsonl.gz")]) == 2
    assert "missing.jsonl.gz" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip")
    assert _cli(["replay", str(broken)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_replay_png_prospector_and_gym(tmp_path, monkeypatch):
    import prospector_game.tools

    drawn = []
    game_draw = prospector_game.tools.draw_replay
    monkeypatch.setattr(prospector_game.tools, "draw_replay", lambda fig, frames: drawn.append(1) or game_draw(fig, frames))
    ep = record_episode(None, "prospector", 11, "v2", 150)
    rel = write_replay(tmp_path, 3, "r", ep)
    replay = tmp_path / rel
    (tmp_path / "config.json").write_text(json.dumps({"env": "prospector"}))  # the replay's run: the game's drawing
    assert _cli(["replay", str(replay)]) == 0 and drawn == [1]
    assert _cli(["replay", str(replay), "--env", "gym:CartPole-v1", "--out", str(tmp_path / "generic.png")]) == 0
    assert drawn == [1] and _png_size(tmp_path / "generic.png") == FIG_SIZE_PX
    png = default_replay_png(replay)
    assert png == tmp_path / "replays" / "replay-000003-r.png"
    assert _png_size(png) == FIG_SIZE_PX
    out = tmp_path / "pics" / "cart.png"
    cart = tmp_path / "cart" / write_replay(tmp_path / "cart", 4, "cart", record_episode(None, "gym:CartPole-v1", 1))
    assert _cli(["replay", str(cart), "--out", str(out)]) == 0 and _png_size(out) == FIG_SIZE_PX
    assert _cli(["replay", str(cart), "--env", "prospector"]) == 2  # not the game's frames: one line, no traceback
    with gzip.open(cart, "rt") as f:
        assert len(f.readlines()) > 0

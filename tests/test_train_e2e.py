"""End-to-end training on embedded Ray: the artifact contract (docs/RUN_ARTIFACTS.md),
status transitions, failure reporting, and the CLI's handling of bad input."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

METADATA_FIELDS = {
    "run_id": str, "status": str, "trainer_backend": str, "target_env_steps": int, "window_env_steps": int,
    "env_steps_total": int, "episodes_total": int, "windows_emitted": int, "checkpoints_written": int,
    "latest_window": dict, "latest_checkpoint": dict, "latest_replay": dict, "replay_index_path": str,
    "metrics_windows_path": str, "checkpoints_dir": str, "replays_dir": str, "config_path": str,
    "wandb_run_url": type(None), "constellation_url": type(None), "started_at": str, "updated_at": str,
    "finished_at": str,
}
WINDOW_FIELDS = {
    "run_id": str, "window_id": int, "window_complete": bool, "env_steps_start": int, "env_steps_end": int,
    "env_steps_in_window": int, "env_steps_total": int, "episodes_completed": int, "terminated_episodes": int,
    "truncated_episodes": int, "reward_sum": float, "reward_mean": float, "sps": float, "wall_time_s": float,
}
LOSSES = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "learning_rate")


def cli(*args, timeout=240, **kw):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([PY, "-m", "ray_app", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, **kw)


def popen_cli(*args):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen([PY, "-m", "ray_app", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def check_types(record: dict, fields: dict, where: str):
    for key, kind in fields.items():
        assert key in record, f"{where}: missing {key}"
        assert isinstance(record[key], kind), f"{where}: {key}={record[key]!r} is not {kind.__name__}"


@pytest.mark.slow
def test_ppo_run_writes_the_contract(tmp_path):
    run_dir = tmp_path / "r1"
    proc = popen_cli("train", "--env", "prospector", "--total-env-steps", "6144", "--window-env-steps", "2048",
                     "--ppo-num-envs", "16", "--ppo-num-workers", "2", "--ppo-rollout-steps", "64",
                     "--ppo-num-minibatches", "4", "--ppo-update-epochs", "1", "--policy-hidden", "32,32",
                     "--env-time-max", "400", "--eval-replays-per-window", "1",
                     "--run-root", str(tmp_path), "--run-id", "r1")
    seen = set()
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        try:
            seen.add(json.loads((run_dir / "run_metadata.json").read_text())["status"])
        except (FileNotFoundError, json.JSONDecodeError):
            pass  # not yet written; a partial file would be a JSONDecodeError, checked below
        time.sleep(0.05)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "running" in seen, "metadata must say running while the run goes"

    meta = json.loads((run_dir / "run_metadata.json").read_text())
    check_types(meta, METADATA_FIELDS, "run_metadata.json")
    assert meta["status"] == "completed" and meta["run_id"] == "r1" and meta["trainer_backend"] == "puffer_ppo"
    assert meta["env_steps_total"] == 6144 and meta["windows_emitted"] == 3 and meta["checkpoints_written"] == 3
    assert meta["num_env_runners"] == 2 and meta["num_envs"] == 16 and meta["learner_device"] == "cpu"
    assert meta["latest_checkpoint"]["path"] == "checkpoints/ckpt_000002.pt"
    assert meta["latest_window"]["window_id"] == 2 and meta["latest_window"]["env_steps_end"] == 6144

    config = json.loads((run_dir / "config.json").read_text())
    assert config["ppo_num_envs"] == 16 and config["run_id"] == "r1" and config["env"] == "prospector"

    rows = [json.loads(line) for line in (run_dir / "metrics" / "windows.jsonl").read_text().splitlines()]
    assert [r["window_id"] for r in rows] == [0, 1, 2]
    for prev, row in zip([None, *rows], rows):
        check_types(row, WINDOW_FIELDS, f"window {row['window_id']}")
        assert row["env_steps_start"] == (prev["env_steps_end"] if prev else 0)
        assert row["env_steps_end"] - row["env_steps_start"] == row["env_steps_in_window"] == 2048
        for key in LOSSES:
            assert isinstance(row[key], float), key
    assert sum(r["episodes_completed"] for r in rows) == meta["episodes_total"]

    ckpt = torch.load(run_dir / "checkpoints" / "ckpt_000002.pt", weights_only=False)
    assert ckpt["format_version"] == 2 and ckpt["window_id"] == 2 and ckpt["env_steps_total"] == 6144
    assert ckpt["policy_spec"]["kwargs"]["hidden"] == [32, 32]
    for key in ("policy_state", "optimizer_state", "update_index", "numpy_rng", "torch_rng"):
        assert key in ckpt["learner"], key
    assert re.search(r"window +2 \| steps +6,144/6,144", out) and "completed" in out and str(run_dir) in out
    # the preset's residual policy: its bot prior travels in the checkpoint, and it is measured sampling
    assert ckpt["policy_spec"]["prior"] == "prospector_game.bots:cautious_scanner"
    assert f"prospector eval --checkpoint {run_dir / 'checkpoints' / 'ckpt_000002.pt'} --stochastic" in out

    # evaluation replays beside training: one per checkpoint, indexed, valid against the schema
    from training.replays import validate_replay

    index = json.loads((run_dir / "replay_index.json").read_text())
    assert [e["window_id"] for e in index["entries"]] == [0, 1, 2]
    assert meta["latest_replay"]["window_id"] == 2 and meta["replay_index_path"] == "replay_index.json"
    for entry in index["entries"]:
        assert validate_replay(run_dir / entry["replay_path"]) == []

    # the tools on the run's checkpoint: eval table with every row, learning-curve plot
    res = cli("eval", "--checkpoint", str(run_dir / "checkpoints" / "ckpt_000002.pt"), "--episodes", "4",
              "--json", str(tmp_path / "eval.json"))
    assert res.returncode == 0, res.stderr
    table = json.loads((tmp_path / "eval.json").read_text())
    assert set(table) >= {"policy", "greedy_miner", "cautious_scanner", "market_timer", "random", "hold", "cash_out"}
    res = cli("plot", str(run_dir), "--bot-episodes", "2")
    assert res.returncode == 0, res.stderr
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000


@pytest.mark.slow
def test_overlapped_run_lags_one_version_and_shares_the_cores(tmp_path):
    """Overlapped rounds (the default) through embedded Ray: runners act one version behind from the
    second round on, except the round after a checkpoint (held back, so the checkpoint holds the
    runners' states: it acts on-policy), and where Ray's CPUs (1 runner + a 2-CPU learner) outnumber
    the cores the update narrows to the free ones while the runner samples."""
    from ray_app.placement import node_cores

    res = cli("train", "--env", "prospector", "--async-rollouts", "--total-env-steps", "6144",
              "--window-env-steps", "2048", "--ppo-num-envs", "16", "--ppo-num-workers", "1",
              "--ppo-rollout-steps", "64", "--ppo-num-minibatches", "4", "--ppo-update-epochs", "1",
              "--policy-hidden", "32,32", "--env-time-max", "400", "--checkpoint-every-windows", "2",
              "--run-root", str(tmp_path), "--run-id", "o")
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [json.loads(line) for line in (tmp_path / "o" / "metrics" / "windows.jsonl").read_text().splitlines()]
    # two rounds a window; the first acts with v0; window 1 ends with a checkpoint, so the round after it waits
    assert [r["policy_lag"] for r in rows] == [0.5, 1.0, 0.5]
    shared = [r["learner_shared_s"] for r in rows]
    if node_cores() - 1 < 2:
        assert all(s > 0 for s in shared), shared
    else:
        assert shared == [0.0, 0.0, 0.0]
    # the update's own time sits inside the driver's wait for it (the rest is Ray's)
    assert all(0 < r["learner_update_s"] <= r["round_wait_learn_s"] for r in rows), rows


@pytest.mark.slow
def test_driver_process_never_loads_torch(tmp_path):
    """The driver moves references: rollouts, weights and runner states go actor to actor, and the
    learner encodes the checkpoint, so the driver's process never imports torch or PufferLib (each
    would cost it ~220 MB and seconds of start-up). Checkpoints still hold every part."""
    code = (
        "import sys\n"
        "from training.config import config_from_args\n"
        "from ray_app.driver import train\n"
        f"cfg = config_from_args(dict(env='prospector', total_env_steps=4096, window_env_steps=2048, "
        f"ppo_num_envs=32, ppo_num_workers=1, ppo_rollout_steps=64, policy_hidden='32,32', "
        # short episodes: an untrained policy's replay otherwise plays to the game's time limit
        # (~1 min on 2 cores, which the run's end waits for)
        f"eval_replays_per_window=1, env_time_max=400, run_root={str(tmp_path)!r}, run_id='r', "
        f"wandb_mode='disabled'))\n"
        "meta = train(cfg)\n"
        "print('RESULT', meta['status'], 'torch' in sys.modules, 'pufferlib' in sys.modules)\n"
    )
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([PY, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert "RESULT completed False False" in res.stdout, res.stdout + res.stderr
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "ckpt_000001.pt", weights_only=False)
    assert ckpt["window_id"] == 1 and ckpt["env_steps_total"] == 4096
    assert ckpt["learner"]["update_index"] == 2
    assert len(ckpt["runners"]) == 1 and ckpt["runners"][0]["env"] is not None
    assert len(json.loads((tmp_path / "r" / "replay_index.json").read_text())["entries"]) == 2


@pytest.mark.slow
def test_seed_cli_random_backend_and_env_failure(tmp_path):
    # the first version's entry point and flags, random backend
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(
        [PY, "training/train_puffer.py", "--trainer-backend", "random", "--total-env-steps", "6000",
         "--window-env-steps", "2000", "--wandb-mode", "disabled", "--ppo-num-envs", "8", "--ppo-num-workers", "4",
         "--ppo-rollout-steps", "128",
         "--run-root", str(tmp_path), "--run-id", "seed"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    meta = json.loads((tmp_path / "seed" / "run_metadata.json").read_text())
    assert meta["status"] == "completed" and meta["trainer_backend"] == "random"
    rows = [json.loads(x) for x in (tmp_path / "seed" / "metrics" / "windows.jsonl").read_text().splitlines()]
    # the first version's artifacts: three windows of 2,000 (250 vector steps of 8 envs, closing
    # mid-round), and a run that stops at 6,000 (its sixth round shortened to 880 steps)
    assert [r["env_steps_in_window"] for r in rows] == [2000, 2000, 2000]
    assert meta["env_steps_total"] == 6000
    assert rows[0]["policy_loss"] is None
    assert (tmp_path / "seed" / "checkpoints" / "ckpt_000002.pt").exists()
    assert "prospector eval" not in res.stdout  # a random-backend checkpoint holds no policy to evaluate

    # an env that returns NaN fails the run with status failed and the error named
    res = cli("train", "--env", "training.envs.examples:countdown_nan", "--total-env-steps", "2000",
              "--window-env-steps", "1000", "--ppo-num-envs", "4", "--ppo-num-workers", "2",
              "--run-root", str(tmp_path), "--run-id", "nan")
    assert res.returncode != 0
    meta = json.loads((tmp_path / "nan" / "run_metadata.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"].startswith("EnvOutputError: env 'training.envs.examples:countdown_nan': non-finite reward")
    assert meta["finished_at"]


@pytest.mark.parametrize("args, flag", [
    (["--total-env-steps", "0"], "--total-env-steps"),
    (["--total-env-steps", "-5"], "--total-env-steps"),
    (["--total-env-steps", "1000", "--window-env-steps", "5000"], "--window-env-steps"),
    (["--ppo-num-envs", "6", "--ppo-num-workers", "2", "--ppo-rollout-steps", "5", "--ppo-num-minibatches", "4"],
     "--ppo-num-minibatches"),
    (["--env-rules", "v3"], "--env-rules"),
    (["--ppo-num-envs", "6", "--ppo-num-workers", "4"], "--ppo-num-envs"),
    (["--env", "no_such_env"], "--env"),
    (["--resume", "/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, flag):
    res = cli("train", "--run-root", str(tmp_path), *args, timeout=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == [], "bad input must not create anything"


def test_new_run_into_existing_run_dir_is_refused(tmp_path):
    existing = tmp_path / "taken"
    (existing / "metrics").mkdir(parents=True)
    (existing / "config.json").write_text('{"keep": true}')
    res = cli("train", "--env", "gym:CartPole-v1", "--run-root", str(tmp_path), "--run-id", "taken", timeout=60)
    assert res.returncode == 2 and "taken" in res.stderr
    assert (existing / "config.json").read_text() == '{"keep": true}'


def test_relative_run_root_is_refused_under_ray_job_submit(tmp_path):
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([PY, "-m", "ray_app", "train", "--env", "gym:CartPole-v1", "--run-root", "runs"],
                         cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.startswith("error: --run-root: 'runs' is relative") and not (tmp_path / "runs").exists()


def _fake_run(root, run_id="old"):
    """A run directory with two checkpoints; returns it and a snapshot of every file's bytes."""
    from training.config import TrainConfig
    from training.checkpoints import CHECKPOINT_FORMAT_VERSION
    from training.run_store import RunStore

    cfg = TrainConfig(env="gym:CartPole-v1", run_id=run_id, total_env_steps=4096, window_env_steps=1024,
                      ppo_num_envs=4, ppo_num_workers=1)
    store = RunStore.create(root, run_id)
    store.write_config(cfg.to_dict())
    for w in (0, 1):
        store.save_checkpoint(w, {"format_version": CHECKPOINT_FORMAT_VERSION, "window_id": w})
    files = {p: p.read_bytes() for p in store.run_dir.rglob("*") if p.is_file()}
    return store.run_dir, files


@pytest.mark.parametrize("damage, named", [
    ("corrupt", "ckpt_000001.pt"),
    ("missing", "checkpoints"),
])
def test_resume_with_a_bad_checkpoint_is_one_line_exit_2_and_changes_nothing(tmp_path, damage, named):
    run_dir, _ = _fake_run(tmp_path)
    newest = run_dir / "checkpoints" / "ckpt_000001.pt"
    if damage == "corrupt":
        newest.write_bytes(b"not a checkpoint")
    else:
        for ckpt in (run_dir / "checkpoints").iterdir():
            ckpt.unlink()
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    res = cli("train", "--resume", str(run_dir), timeout=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], res.stderr
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before, "nothing of the run changed"


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics" / "windows.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("args, envs", [
    # the first version's README commands (the game's preset: 256 envs, so to the vector step)
    (["--trainer-backend", "random", "--total-env-steps", "6000", "--window-env-steps", "2000"], 256),
    (["--env", "prospector", "--total-env-steps", "20000", "--window-env-steps", "10000",
      "--policy-hidden", "32,32"], 256),
    # windows that are a multiple of the envs come out exact; the last round is shortened
    (["--env", "gym:CartPole-v1", "--ppo-num-envs", "8", "--ppo-num-workers", "1", "--total-env-steps", "6000",
      "--window-env-steps", "2000"], 8),
])
def test_windows_close_at_the_asked_steps_and_the_run_stops_at_its_total(tmp_path, args, envs):
    res = cli("train", *args, "--run-root", str(tmp_path), "--run-id", "r")
    assert res.returncode == 0, res.stdout + res.stderr
    window, total = (int(args[args.index(flag) + 1]) for flag in ("--window-env-steps", "--total-env-steps"))
    rows = _rows(tmp_path / "r")
    ends = [-(-(j + 1) * window // envs) * envs for j in range(total // window)]  # first vector step past each
    assert [r["env_steps_end"] for r in rows] == ends
    meta = json.loads((tmp_path / "r" / "run_metadata.json").read_text())
    assert meta["env_steps_total"] == -(-total // envs) * envs  # stopped at the vector step reaching the total

"""The extension points through docs/EXTENDING.md's worked example, as written: its files are
taken from the document into a folder outside the repository. A policy from there and PufferLib's
own policy train CartPole to the learning bar and evaluate without policy flags; the example env's
plug-in, registered through its entry point, trains with its preset, names and tool hooks."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training.run_store import RunStore

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "EXTENDING.md"
BAR = 475  # CartPole-v1's "solved" return, as in tests/test_learning.py


def doc_files(dest: Path) -> dict[str, Path]:
    """The document's ```python blocks that start with '# file: NAME', written into dest."""
    files = {}
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S):
        m = re.match(r"# file: (\S+)\n", block)
        if m:
            files[m.group(1)] = dest / m.group(1)
            files[m.group(1)].write_text(block)
    return files


def env_with(path: Path) -> dict:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    return env


def cli(env: dict, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_app", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def train_cartpole_to_the_bar(tmp_path: Path, env: dict, run_id: str, *flags) -> Path:
    """CartPole's preset with the given flags, stopped at its first window at or above the bar (as
    the CartPole learning test); returns the run directory."""
    store = RunStore(tmp_path / run_id)
    proc = subprocess.Popen([sys.executable, "-m", "ray_app", "train", "--env", "gym:CartPole-v1", "--total-env-steps",
                             "200000", "--window-env-steps", "10000", "--seed", "0", "--run-root", str(tmp_path),
                             "--run-id", run_id, *flags], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    try:
        while proc.poll() is None and time.time() < deadline:
            if any((r["return_mean"] or 0) >= BAR for r in store.read_windows()):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
        out = proc.communicate(timeout=max(1.0, deadline - time.time()))[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130), out[-3000:]
    returns = [r["return_mean"] for r in store.read_windows() if r["return_mean"] is not None]
    assert max(returns) >= BAR, returns
    print(f"{run_id}: first window >= {BAR} ends at "
          f"{next(r['env_steps_end'] for r in store.read_windows() if (r['return_mean'] or 0) >= BAR)} steps")
    return store.run_dir


def evaluate(env: dict, run_dir: Path, tmp_path: Path) -> dict:
    """`prospector eval` of the run's newest checkpoint, with no policy flag."""
    ckpt = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))[-1]
    res = cli(env, "eval", "--checkpoint", str(ckpt), "--episodes", "8", "--json", str(tmp_path / "eval.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((tmp_path / "eval.json").read_text())


@pytest.mark.slow
def test_a_policy_from_outside_the_repo_learns_cartpole_and_evaluates_without_flags(tmp_path):
    files = doc_files(tmp_path)
    assert {"my_policies.py", "my_env.py", "my_plugin.py", "my_tools.py"} <= set(files)
    env = env_with(tmp_path)
    run = train_cartpole_to_the_bar(tmp_path, env, "outside", "--policy", "my_policies:TwoTowers",
                                    "--policy-kwargs", '{"width": 64}')
    spec = json.loads((run / "config.json").read_text())
    assert spec["policy"] == "my_policies:TwoTowers" and spec["policy_kwargs"] == {"width": 64}
    assert evaluate(env, run, tmp_path)["policy"]["return_mean"] > 100  # near-random CartPole scores ~20


@pytest.mark.slow
def test_pufferlibs_default_policy_learns_cartpole_and_evaluates_without_flags(tmp_path):
    env = env_with(tmp_path)
    run = train_cartpole_to_the_bar(tmp_path, env, "default", "--policy", "pufferlib.models:Default",
                                    "--policy-kwargs", '{"hidden_size": 128}')
    assert evaluate(env, run, tmp_path)["policy"]["return_mean"] > 100


@pytest.mark.slow
def test_the_example_plugin_registers_through_its_entry_point_and_trains(tmp_path):
    doc_files(tmp_path)
    dist = tmp_path / "my_corridor-0.1.dist-info"  # what `pip install` of the user's package leaves
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-corridor\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prospector_trainer.envs]\ncorridor = my_plugin:PLUGIN\n")
    env = env_with(tmp_path)
    listed = cli(env, "envs")
    assert "--env corridor: my_env:make" in listed.stdout and "go_right" in listed.stdout, listed.stdout
    res = cli(env, "train", "--env", "corridor", "--kickstart-teacher", "go_right", "--kickstart-steps", "10000",
              "--policy-prior", "go_right", "--policy-prior-logit", "1", "--run-root", str(tmp_path), "--run-id", "c")
    assert res.returncode == 0, res.stdout + res.stderr
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["ppo_num_envs"] == 16 and config["policy"] == "two_towers"  # the plug-in's preset
    rows = RunStore(tmp_path / "c").read_windows()
    assert len(rows) == 10 and rows[-1]["steps_taken_mean"] is not None  # the env's own episode metric
    assert rows[0]["distill_loss"] is not None  # the teacher (on for the first 10,000 steps), by its name
    spec = torch.load(tmp_path / "c" / "checkpoints" / "ckpt_000009.pt", weights_only=False)["policy_spec"]
    assert spec == {"version": 2, "factory": "my_policies:TwoTowers", "kwargs": {"width": 32},
                    "prior": "my_env:go_right", "prior_logit": 1.0}  # the names, resolved
    table = evaluate(env, tmp_path / "c", tmp_path)
    assert set(table) == {"policy", "go_right"} and table["go_right"]["return_mean"] == 1.0  # the tool hook's row
    assert table["policy"]["return_mean"] > 0.9  # the corridor is learnt: the right end, every episode

"""The chaos run at small scale (bench/chaos.py): on a local three-node cluster a runner, the
learner and a worker node are killed at random points of a run, which still completes with every
window exactly once, env steps continuous and a loadable checkpoint for every window."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_run_survives_a_runner_the_learner_and_a_node_killed_at_random(tmp_path):
    report = load_bench("chaos").run_chaos(str(tmp_path), total_env_steps=16384, per_kind=1, seed=3)
    assert report["injected"] == {"runner": 1, "learner": 1, "node": 1}, report["events"]
    assert report["check"] == [], report
    assert report["steps_lost"] == 0 and report["learner_restarts"] >= 1

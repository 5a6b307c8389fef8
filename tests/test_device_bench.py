"""bench/device (the one-shot GPU benchmark) in its --cpu mode: tiny sizes on CPU with this venv's
packages, so the script that runs on a GPU node cannot rot where no GPU is lent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_device_bench_prints_its_table_on_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "WANDB_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run(["bash", "bench/device/run.sh", "--cpu", "--json", str(tmp_path / "out.json"),
                          "--run-root", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "| configuration | steady sps | / PuffeRL | / learner alone | notes |" in res.stdout
    rows = json.loads((tmp_path / "out.json").read_text())["rows"]
    assert set(rows) == {"learner alone", "ours, CPU inference", "ours, GPU inference", "PuffeRL"}
    for name in ("learner alone", "ours, CPU inference", "PuffeRL"):
        assert rows[name].get("sps", 0) > 0, (name, rows[name])


def test_the_gpu_mode_fits_the_node():
    """Sizes the GPU node runs: 14 runners and the learner on 16 cores, GPU shares within one GPU,
    and the envs split evenly over the runners and into the minibatches."""
    sys.path.insert(0, str(REPO / "bench" / "device"))
    import device_bench as b

    g = b.GPU
    assert g["runners"] == 14 and g["envs"] % g["runners"] == 0
    assert (g["envs"] * g["rollout"]) % g["minibatches"] == 0
    assert g["runners"] * g["runner_gpus"] + g["learner_gpus"] <= 1.0 + 1e-9
    assert (g["learner_envs"], g["rollout"]) == (256, 64)

"""Runner inference's device (--runner-device, --runner-num-gpus): the option reaches the collector,
a policy on the device the option names collects the same rollouts, the one-copy transfer back is
exact, and CUDA runners on a cluster without GPUs are refused before any actor starts."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.agent import build_agent, make_spec
from training.config import ConfigError, config_from_args
from training.envs.env_info import EnvInfo
from training.envs.registry import make_vecenv
from training.rollout import RolloutCollector, packed_to_host

REPO = Path(__file__).resolve().parents[1]
BASE = {"env": "gym:CartPole-v1", "ppo_num_envs": 4, "ppo_num_workers": 1, "ppo_rollout_steps": 16}


def test_the_option_reaches_the_collector_and_the_policy():
    from ray_app.runner import EnvRunner

    cfg = config_from_args({**BASE, "runner_device": "cpu"})
    runner = EnvRunner(cfg.to_dict(), 0)
    assert runner.collector.device == torch.device(cfg.runner_device)
    spec = make_spec(cfg)
    weights = {k: v.detach().numpy() for k, v in build_agent(spec, runner.env_info()).state_dict().items()}
    batch, summary = runner.collect(weights, 0, spec)
    assert batch["actions"].shape == (16, 4)
    assert all(p.device == torch.device("cpu") for p in runner.collector.policy.parameters())
    runner.close()


def test_a_policy_on_the_option_s_device_collects_identical_rollouts():
    cfg = config_from_args({**BASE, "runner_device": "cpu"})
    batches = []
    for device in (None, cfg.runner_device):
        env = make_vecenv(cfg.env, 4, seed=3)
        torch.manual_seed(0)
        policy = build_agent(make_spec(cfg), EnvInfo.of(env))
        kwargs = {} if device is None else {"device": device}
        if device is not None:
            policy = policy.to(device)
        collector = RolloutCollector(env, 16, 3, policy=policy, **kwargs)
        batches.append([collector.collect()[0] for _ in range(2)])
        env.close()
    for a, b in zip(*batches):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), k


def test_the_packed_copy_back_is_exact_for_every_dtype():
    action = torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64)
    logprob = torch.tensor([-0.5, float("nan")], dtype=torch.float32)
    value = torch.tensor([1e-30, -3.25], dtype=torch.float32)
    got = packed_to_host(action, logprob, value)
    for g, t in zip(got, (action, logprob, value)):
        assert g.dtype == t.numpy().dtype and g.shape == tuple(t.shape)
        assert np.array_equal(g, t.numpy(), equal_nan=True)


def test_cuda_runners_need_a_gpu_share():
    with pytest.raises(ConfigError, match="--runner-num-gpus: --runner-device cuda needs a share"):
        config_from_args({**BASE, "runner_device": "cuda"})
    cfg = config_from_args({**BASE, "runner_device": "cuda", "runner_num_gpus": 0.25})
    assert (cfg.runner_device, cfg.runner_num_gpus) == ("cuda", 0.25)


def test_cuda_runners_on_a_cluster_without_gpus_are_a_settings_error():
    from ray_app.placement import _needed_bundles, check_gpus

    cfg = config_from_args({**BASE, "runner_device": "cuda", "runner_num_gpus": 0.25})
    with pytest.raises(ConfigError, match="--runner-device: cuda: the Ray cluster has no GPU"):
        check_gpus(cfg, _needed_bundles(cfg, "cpu"), {"CPU": 8.0})
    with pytest.raises(ConfigError, match="need 1.25 GPUs; the Ray cluster has 1"):
        check_gpus(cfg, _needed_bundles(cfg, "cuda"), {"CPU": 8.0, "GPU": 1.0})
    fits = config_from_args({**BASE, "runner_device": "cuda", "runner_num_gpus": 0.25, "learner_num_gpus": 0.75})
    check_gpus(fits, _needed_bundles(fits, "cuda"), {"CPU": 8.0, "GPU": 1.0})


@pytest.mark.slow
def test_cli_refuses_cuda_runners_without_gpus_with_exit_2(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "WANDB_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-m", "ray_app", "train", "--env", "gym:CartPole-v1", "--runner-device", "cuda",
                          "--runner-num-gpus", "0.5", "--learner-device", "cpu", "--run-root", str(tmp_path),
                          "--run-id", "gpu"], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "--runner-device: cuda: the Ray cluster has no GPU" in res.stderr
    assert not (tmp_path / "gpu").exists()  # the run never began: nothing left behind

"""Training from Python (a notebook, a script): the CLI's runs, without the CLI.

    from ray_app import api

    cfg = api.make_config({"env": "gym:CartPole-v1", "total_env_steps": 200_000})   # or config_file="c.toml"
    run = api.train(cfg, on_window=lambda row: print(row["return_mean"]))
    run.windows[-1]["return_mean"]; run.metadata["status"]
    act = run.policy()                     # observations (NumPy batch) -> actions
    run = api.Run.load("runs/<id>")        # any finished or stopped run directory (or "s3://bucket/runs/<id>")

``train`` starts an embedded Ray for the run (and stops it after) unless Ray is already
initialised or ``address`` (or RAY_ADDRESS) names a cluster. An interrupt (Ctrl-C, a notebook's
stop button) ends the run as on the CLI: the current round finishes, a final checkpoint is written,
the status is ``stopped``, and ``train`` returns the run; a second interrupt raises
KeyboardInterrupt instead of ending the process. ``on_window(row)`` returning False stops the run
the same way (early stopping).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from training.config import TrainConfig
from training.config_cli import resolve


def make_config(settings: dict | None = None, *, config_file: str | os.PathLike | None = None,
                **overrides) -> TrainConfig:
    """Settings as on the command line: the env's preset (or its action space's defaults), then
    ``config_file``, then ``settings`` and ``overrides`` (field names: ``ppo_num_envs=64``).
    Invalid settings raise ``training.config.ConfigError`` naming the flag."""
    given = {**(settings or {}), **overrides}
    if config_file is not None:
        given["config"] = str(config_file)
    return resolve(given)


@dataclass
class Run:
    """A run directory: its metadata, its window rows, its policy. ``run_dir``: a Path, or a
    ``training.storage.RemotePath`` for a run on an object store (``str()`` gives its URI)."""

    run_dir: Path
    metadata: dict
    windows: list[dict]

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "Run":
        from training.run_store import RunStore

        store = RunStore.open(run_dir)
        return cls(store.run_dir, store.read_metadata(), store.read_windows())

    @property
    def config(self) -> dict:
        return json.loads((self.run_dir / "config.json").read_text())

    def policy(self, checkpoint: str | os.PathLike | None = None, deterministic: bool = True,
               seed: int = 0) -> Callable[[np.ndarray], np.ndarray]:
        """The policy of ``checkpoint`` (default: the run's latest) as a function from a batch of
        observations to the env's actions (clipped to a Box's bounds), as ``prospector eval``
        plays it; ``deterministic=False`` samples, seeded."""
        from training.evaluate import load_policy, make_act_fn

        if checkpoint is None:
            latest = self.metadata.get("latest_checkpoint")
            if not latest:
                raise FileNotFoundError(f"{self.run_dir}: the run has no checkpoint yet")
            checkpoint = self.run_dir / latest["path"]
        agent, _ = load_policy(checkpoint)
        return make_act_fn(agent, agent.action_space, deterministic=deterministic, seed=seed)


def train(config: TrainConfig | dict, *, address: str | None = None,
          on_window: Callable[[dict], object] | None = None) -> Run:
    """Train (or, with ``resume`` set, continue) one run and return it. ``config``: a TrainConfig
    (``make_config``) or a dict of settings for it."""
    from ray_app.driver import train as run_training

    cfg = config if isinstance(config, TrainConfig) else make_config(config)
    if address is not None:
        cfg.address = address
    if not (cfg.address or os.environ.get("RAY_ADDRESS")):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # an embedded Ray: loopback only
    run_training(cfg, on_window=on_window, exit_on_second_signal=False)  # it fills in cfg.run_id
    from training.storage import join

    return Run.load(cfg.resume or join(cfg.run_root, cfg.run_id))

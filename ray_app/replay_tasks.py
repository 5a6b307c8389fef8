"""Evaluation replays beside training: after each checkpoint a Ray task plays the window's episodes
with that checkpoint's weights; the driver writes the best one when the task is done, never
blocking the learner on it."""

from __future__ import annotations

import ray

from ray_app.placement import set_torch_threads
from training.replay_index import best_window_episode, publish_replay, thresholds_from_config


# num_cpus=0: it runs beside the runners and learner instead of waiting for them to finish.
@ray.remote(num_cpus=0)
def play_window_episodes(cfg_dict: dict, window_id: int, policy_spec: dict | None, weights: dict | None, env_info):
    from training.agent import build_agent, set_weights  # torch: in the task, not the driver

    set_torch_threads()
    policy = None
    if policy_spec is not None:
        policy = build_agent(policy_spec, env_info)
        set_weights(policy, weights)
    return best_window_episode(cfg_dict, window_id, policy)


class ReplayTracker:
    def __init__(self, cfg, run_dir, run_id: str, env_info):
        self.cfg, self.run_dir, self.run_id, self.env_info = cfg, run_dir, run_id, env_info
        self.enabled = cfg.eval_replays_per_window > 0
        self.pending: dict = {}  # task ref -> (window_id, checkpoint path, env steps)

    def submit(self, window_id: int, checkpoint_path: str, env_steps: int, policy_spec, weights) -> None:
        if self.enabled:
            ref = play_window_episodes.remote(self.cfg.to_dict(), window_id, policy_spec, weights, self.env_info)
            self.pending[ref] = (window_id, checkpoint_path, env_steps)

    def collect(self, meta: dict, sink, wait: bool = False) -> dict:
        """Publish finished replays (all of them when ``wait``); returns the updated metadata."""
        if not self.pending:
            return meta
        refs = list(self.pending)
        done, _ = ray.wait(refs, num_returns=len(refs) if wait else 1, timeout=None if wait else 0)
        for ref in sorted(done, key=lambda r: self.pending[r][0]):
            window_id, checkpoint_path, env_steps = self.pending.pop(ref)
            episode = ray.get(ref)
            if episode is None:
                continue
            entry = publish_replay(self.run_dir, self.run_id, window_id, episode, checkpoint_path, env_steps,
                                   self.cfg.trainer_backend, thresholds_from_config(self.cfg))
            sink.log_replay(str(self.run_dir / entry["replay_path"]), window_id)
            meta = {**meta, "latest_replay": entry, "replay_index_path": "replay_index.json"}
        return meta

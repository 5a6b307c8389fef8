"""Atari games from pixels, through ``ale-py``'s native vector env (its ROMs ship in the wheel):
``--env breakout`` trains ``ALE/Breakout-v5`` with a CNN (``pip install -e '.[atari]'``).

``atari(num_envs, seed, game=...)`` returns one native ``pufferlib.PufferEnv`` of ``num_envs``
games, stepped by ``ale_py.vector_env.AtariVectorEnv``, whose C++ side does the usual
preprocessing (Machado et al. 2018; CleanRL's ``ppo_atari``): each decision repeats its action for
4 frames, max-pooled over the last two; the frame is greyscaled and resized to 84x84; the last 4
frames are stacked, so an observation is ``uint8 (4, 84, 84)``; an episode starts with up to 30
no-ops (and FIRE where the game needs it to start). v5's own settings stay: sticky actions (0.25:
the emulator repeats the previous action with that probability, each frame), the minimal action
set (Breakout: 4), 108,000 frames at most (a truncation). Episodes are whole games: a lost life
ends nothing (no "episodic life"), so the episodes the trainer counts are the games it reports.

Rewards: the trainer learns from clipped rewards, the sign of the game's (``clip_rewards``, on by
default, as DQN and CleanRL do; Breakout pays 1, 4 or 7 a brick, so a clipped return counts
bricks). The game score is reported beside it: each finished episode's info dict carries
``score``, the unclipped sum, with its ``env_index``, so the run's ``metrics/windows.jsonl`` has
``score_mean`` next to ``return_mean`` (the clipped sum), and ``prospector eval`` shows a score
column. ``--env-kwargs '{"clip_rewards": false}'`` learns from the score itself (then both match).

Resets happen inside the step that ends an episode (``autoreset_same_step``, ALE's ``SameStep``
mode); the observation an episode ended on is in ``final_observations``, for bootstrapping a
truncated one. ``reset(seed)`` seeds env i with ``seed + i``; the emulator's sticky-action draws
and no-op starts then follow from it, so a seed and an action sequence give one trajectory.

This module imports neither ``ale_py`` nor PufferLib nor torch at import time: the driver loads
every plug-in to read presets. The env class is made on first use (``AtariEnv``, via the module's
``__getattr__``).
"""

from __future__ import annotations

import functools

import numpy as np

from training.envs.plugin import EnvPlugin

FRAMESKIP = 4
STACK = 4
SIZE = 84
MAX_FRAMES = 108_000  # v5's max_num_frames_per_episode: 30 minutes of play at 60 frames a second


@functools.cache
def _env_class():
    import pufferlib
    from gymnasium import spaces

    class AtariEnv(pufferlib.PufferEnv):
        """``num_envs`` games of ``game`` (ale-py's snake_case ROM id) behind PufferLib's buffers."""

        def __init__(self, num_envs: int = 8, seed: int = 0, game: str = "breakout", clip_rewards: bool = True,
                     repeat_action_probability: float = 0.25, noop_max: int = 30, frameskip: int = FRAMESKIP,
                     stack: int = STACK, size: int = SIZE, max_frames: int = MAX_FRAMES,
                     full_action_space: bool = False, num_threads: int = 1, buf=None):
            from ale_py.vector_env import AtariVectorEnv

            self.ale = AtariVectorEnv(
                game, num_envs, num_threads=num_threads, autoreset_mode="SameStep",
                repeat_action_probability=repeat_action_probability, full_action_space=full_action_space,
                max_num_frames_per_episode=max_frames, img_height=size, img_width=size, grayscale=True,
                stack_num=stack, frameskip=frameskip, maxpool=True, noop_max=noop_max,
                episodic_life=False, reward_clipping=False, use_fire_reset=True)
            self.single_observation_space = spaces.Box(0, 255, (stack, size, size), np.uint8)
            self.single_action_space = spaces.Discrete(int(self.ale.single_action_space.n))
            self.num_agents = num_envs
            super().__init__(buf)
            self.autoreset_same_step = True
            self.game = game
            self.seed = 0 if seed is None else int(seed)  # pufferlib.vector may pass None
            self.clip_rewards = bool(clip_rewards)
            self.final_observations = np.zeros_like(self.observations)
            self.score = np.zeros(num_envs, dtype=np.float64)  # the running game score of each env
            self._actions = np.zeros(num_envs, dtype=np.int32)

        def reset(self, seed=None):
            obs, info = self.ale.reset(seed=self.seed if seed is None else int(seed))
            self.observations[info["env_id"]] = obs
            self.score[:] = 0.0
            return self.observations, []

        def step(self, actions):
            self._actions[:] = np.asarray(actions).reshape(-1)
            obs, rew, term, trunc, info = self.ale.step(self._actions)
            ids = info["env_id"]  # env i's row is i with batch_size == num_envs, but do not rely on it
            self.observations[ids] = obs
            raw = np.asarray(rew, dtype=np.float64)
            self.rewards[ids] = np.sign(raw) if self.clip_rewards else raw
            self.terminals[ids] = term
            self.truncations[ids] = trunc
            self.score[ids] += raw
            done = np.asarray(term) | np.asarray(trunc)
            infos = []
            if done.any():
                rows = np.flatnonzero(done)
                finished = ids[rows]
                self.final_observations[finished] = np.asarray(info["final_obs"])[rows]
                infos = [{"env_index": int(i), "score": float(self.score[i])} for i in finished]
                self.score[finished] = 0.0
            return self.observations, self.rewards, self.terminals, self.truncations, infos

        def close(self):
            self.ale.close()

    AtariEnv.__qualname__ = "AtariEnv"  # made in a function, named as if at module level
    return AtariEnv


def __getattr__(name):
    if name == "AtariEnv":
        return _env_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def atari(num_envs: int = 8, seed: int = 0, game: str = "breakout", clip_rewards: bool = True,
          repeat_action_probability: float = 0.25, noop_max: int = 30, frameskip: int = FRAMESKIP,
          full_action_space: bool = False, num_threads: int = 1):
    """``num_envs`` games of ``game`` (ale-py's ROM id in snake_case: ``breakout``, ``pong``,
    ``ms_pacman``) with v5's settings and the usual preprocessing (module docstring).
    ``num_threads``: the emulator threads stepping them (one per runner's CPU by default)."""
    return _env_class()(num_envs=num_envs, seed=seed, game=game, clip_rewards=clip_rewards,
                        repeat_action_probability=repeat_action_probability, noop_max=noop_max,
                        frameskip=frameskip, full_action_space=full_action_space, num_threads=num_threads)


def breakout(num_envs: int = 8, seed: int = 0, clip_rewards: bool = True, repeat_action_probability: float = 0.25,
             num_threads: int = 1):
    """``ALE/Breakout-v5``, preprocessed: ``atari(game="breakout")``."""
    return atari(num_envs, seed, game="breakout", clip_rewards=clip_rewards,
                 repeat_action_probability=repeat_action_probability, num_threads=num_threads)


# ---------------------------------------------------------------- tool hooks (training.envs.plugin.TOOL_HOOKS)
eval_columns = (
    ("score_mean", "score", "{:.1f}"),
    ("episode_length_mean", "length", "{:.1f}"),
)


def baselines(episodes: int, seed0: int, rules=None, time_max=None) -> dict:
    """A uniformly random policy on the seeds the policy is evaluated on: ``prospector eval``'s
    reference row (Breakout's minimal action set: NOOP, FIRE, RIGHT, LEFT)."""
    from training.evaluate import evaluate_policy, summarize

    rng = np.random.default_rng(seed0)
    return {"random": summarize(evaluate_policy(lambda obs: rng.integers(0, 4, size=len(obs)), "breakout",
                                                episodes, seed0))}


# CleanRL's ppo_atari.py (Huang et al. 2022, "The 37 implementation details of PPO"): 8 envs x 128
# steps, 4 minibatches of 256, 4 epochs, lr 2.5e-4 annealed, clip 0.1, entropy 0.01, value 0.5,
# gamma 0.99, lambda 0.95, max grad norm 0.5, advantages normalised; the Nature CNN with a
# 512-unit layer before the heads.
ATARI_PRESET = dict(
    ppo_num_envs=8,
    ppo_num_workers=1,
    ppo_rollout_steps=128,
    ppo_num_minibatches=4,
    ppo_update_epochs=4,
    ppo_learning_rate=2.5e-4,
    ppo_anneal_lr=True,
    ppo_clip_coef=0.1,
    ppo_vf_clip_coef=0.1,
    ppo_ent_coef=0.01,
    ppo_vf_coef=0.5,
    ppo_max_grad_norm=0.5,
    ppo_gamma=0.99,
    ppo_gae_lambda=0.95,
    ppo_norm_adv=True,
    policy_hidden="512",
)

BREAKOUT = EnvPlugin(
    name="breakout",
    env="training.envs.atari:breakout",
    preset=ATARI_PRESET,
    tools="training.envs.atari",
)

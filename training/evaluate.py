"""Evaluate a trained policy on held-out seeds, one episode per seed, beside the env's baselines.

Each seed plays exactly one episode, so two policies evaluated on the same seed range face the
same worlds and their numbers can be compared row by row. Every env of the batch plays only its
first episode: the env resets finished envs on its own, and those later episodes are ignored (the
actions fed to a finished env do not matter, so the whole batch keeps stepping until the slowest
first episode ends). An env's plug-in may add rows (its ``baselines`` hook: the prospector's
scripted bots on the same seeds) and columns (``eval_columns``) to the table.

Seeds default to 100000+ in the CLI because training uses small seeds; evaluating on the training
seeds would flatter the policy.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import numpy as np
import torch
from gymnasium import spaces

from training.agent import Agent, build_agent
from training.checkpoints import CheckpointError, load_checkpoint
from training.envs.env_info import EnvInfo
from training.envs.env_spec import env_build_settings
from training.rollout import random_actions
from training.storage import as_path

ActFn = Callable[[np.ndarray], np.ndarray]

# Columns of comparison_table: (summary key, header, format); an env's eval_columns hook replaces
# the last one.
BASE_COLUMNS = (
    ("episodes", "episodes", "{:d}"),
    ("return_mean", "return mean", "{:.3f}"),
    ("return_median", "median", "{:.3f}"),
    ("return_ci95", "95% CI of mean", None),
)
LENGTH_COLUMN = (("episode_length_mean", "length", "{:.1f}"),)


def load_policy(checkpoint_path) -> tuple[Agent, dict]:
    """Rebuild the policy stored in a checkpoint, for the env of its run. Raises
    CheckpointError("<path>: <reason>")."""
    from training.envs.registry import make_vecenv

    path = as_path(checkpoint_path)  # a local path, or a URI: load_checkpoint reads either
    ckpt = load_checkpoint(path)  # already names the file for missing/corrupt/foreign files
    learner = ckpt.get("learner")
    if learner is None:
        raise CheckpointError(f"{path}: written by the random backend, it holds no policy to evaluate")
    spec = ckpt.get("policy_spec")
    state = learner.get("policy_state") if isinstance(learner, dict) else None
    if not isinstance(spec, dict) or state is None:
        raise CheckpointError(f"{path}: missing policy_spec or learner.policy_state")
    config = ckpt.get("config") or {}
    probe = make_vecenv(config.get("env"), 1, 0, **env_build_settings(config))
    env_info = EnvInfo.of(probe)
    probe.close()
    try:
        policy = build_agent(spec, env_info)
        policy.load_state_dict(state, strict=True)
    except Exception as exc:  # shape mismatches, unknown spec versions, non-tensors
        raise CheckpointError(f"{path}: policy cannot be rebuilt ({type(exc).__name__}: {exc})") from exc
    policy.eval()
    return policy, ckpt


def make_act_fn(policy: Agent | None, action_space, deterministic: bool = True, seed: int = 0,
                temperature: float = 1.0) -> ActFn:
    """obs batch -> env actions. ``policy`` None plays uniform random actions (random backend); a
    plain callable (a bot) is used as is. ``temperature`` applies when sampling
    (``Policy.tempered``).
    Sampling (stochastic, or random) uses its own seeded generator so results repeat exactly and
    never touch the global RNG."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if callable(policy) and not isinstance(policy, torch.nn.Module):
        return policy  # already an act function (a scripted bot)
    if policy is None:
        rng = np.random.default_rng(seed)
        return lambda obs: random_actions(action_space, len(obs), rng)
    gen = torch.Generator().manual_seed(int(seed))
    device = next(policy.parameters()).device
    box = isinstance(action_space, spaces.Box)
    # a recurrent policy's state, one row per env: each env plays one episode (``_play``, replays)
    state = {}

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs), device=device)  # the env's dtype: the policy casts
            if policy.recurrent and not state:
                state.update(policy.initial_state(len(x), device))
            action, _, _ = policy.act(x, deterministic=deterministic, generator=gen, with_value=False,
                                      temperature=temperature, state=state or None)
        a = action.cpu().numpy()
        if box:  # the policy's Gaussian is unsquashed; the env expects in-bounds actions
            a = np.clip(a.reshape(len(obs), *action_space.shape), action_space.low, action_space.high)
        return a

    return act


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread while playing episodes: a 256x256 MLP on a small batch was ~20x
    slower with 2 intra-op threads on a busy 2-core machine (thread hand-off costs more than the
    matmul), and the NumPy env between forward passes is single-threaded anyway. Restores the
    previous setting; torch's thread count is process-wide."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _play(act_fn: ActFn, env_spec: str, seeds: list[int], settings: dict, vector_backend: str,
          max_steps) -> list[dict]:
    """One record per seed and agent: the first episode of each agent of env i, seeded seeds[0] + i.
    A record holds the return, length and ending counted here, updated with the env's own info for
    that episode (the dicts with an ``env_index`` it reports when an episode ends)."""
    from training.envs.registry import make_vecenv

    env = make_vecenv(env_spec, len(seeds), seeds[0], vector_backend=vector_backend, **settings)
    n = env.num_agents  # one row per agent: k rows per env
    seed_of_row = np.repeat(seeds, n // len(seeds))
    try:
        obs, _ = env.reset(seed=seeds[0])  # env i plays seed + i (PufferLib's rule, and native envs')
        ret = np.zeros(n)
        length = np.zeros(n, np.int64)
        done = np.zeros(n, bool)
        records: list = [None] * n
        steps = 0
        while not done.all() and (max_steps is None or steps < max_steps):
            obs, rew, term, trunc, infos = env.step(act_fn(obs))
            steps += 1
            live = ~done
            ret += np.where(live, rew, 0.0)
            length += live
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            reported = {int(d["env_index"]): d for d in infos if isinstance(d, dict) and "env_index" in d}
            for i in np.flatnonzero(live & (term | trunc)):
                done[i] = True
                records[i] = {"episode_return": float(ret[i]), "episode_length": int(length[i]),
                              "terminated": int(term[i]), "truncated": int(trunc[i] and not term[i]),
                              **reported.get(int(i), {}), "env_index": int(i), "seed": int(seed_of_row[i])}
    finally:
        env.close()
    if not done.all():
        raise RuntimeError(f"max_steps={max_steps} reached before every episode ended")
    return records


def evaluate_policy(act_fn: ActFn, env_spec: str, episodes: int, seed0: int, rules: str | None = None,
                    time_max: int | None = None, vector_backend: str = "serial",
                    max_steps: int | None = None, kwargs: dict | None = None) -> list[dict]:
    """Play one episode per seed seed0 .. seed0+episodes-1; one metrics dict per episode, in seed
    order: episode_return, episode_length, terminated, truncated, seed, and whatever the env
    reports of the episode (the prospector: credits, net_profit, survival, ...). ``act_fn`` maps an
    obs batch to actions (see make_act_fn). ``kwargs``: the env's ``--env-kwargs``."""
    episodes = int(episodes)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    seeds = [int(seed0) + i for i in range(episodes)]
    with single_thread():  # the env steps on one core anyway; see single_thread for why
        return _play(act_fn, env_spec, seeds, dict(rules=rules, time_max=time_max, kwargs=kwargs), vector_backend,
                     max_steps)


_NOT_METRICS = ("episode_return", "env_index", "seed")


def summarize(episodes: list[dict]) -> dict:
    """Aggregate per-episode dicts: return statistics, and ``<key>_mean`` for every other number
    all episodes report (episode_length_mean, terminated_mean, ...; the env's own, such as the
    prospector's survival_mean). The 95% CI of the mean return uses the normal approximation with
    the sample standard deviation: mean +- 1.96 * sd / sqrt(n); with one episode it is undefined
    (None)."""
    if not episodes:
        raise ValueError("no episodes to summarize")
    ret = np.array([float(e["episode_return"]) for e in episodes])
    n = len(ret)
    mean = float(ret.mean())
    if n > 1:
        sd = float(ret.std(ddof=1))
        half = 1.96 * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    else:
        sd, low, high = None, None, None
    out = {"episodes": n, "return_mean": mean, "return_median": float(np.median(ret)), "return_std": sd,
           "return_ci95_low": low, "return_ci95_high": high}
    for key in episodes[0]:
        values = [e.get(key) for e in episodes]
        if key not in _NOT_METRICS and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[f"{key}_mean"] = float(np.mean(values))
    return out


def _cell(summary: dict, key: str, fmt) -> str:
    if key == "return_ci95":
        lo, hi = summary.get("return_ci95_low"), summary.get("return_ci95_high")
        return "-" if lo is None or hi is None else f"[{lo:.3f}, {hi:.3f}]"
    value = summary.get(key)
    if value is None:
        return "-"
    return fmt.format(int(value) if fmt == "{:d}" else float(value))


def comparison_table(results: dict, columns=BASE_COLUMNS + LENGTH_COLUMN) -> str:
    """Aligned text table, one row per {name: summary} entry, in the dict's order; ``columns``:
    (summary key, header, format) each."""
    header = ["name"] + [h for _, h, _ in columns]
    rows = [[str(name)] + [_cell(s, k, f) for k, _, f in columns] for name, s in results.items()]
    widths = [max(len(r[c]) for r in [header] + rows) for c in range(len(header))]

    def line(cells):
        # names left-aligned, numbers right-aligned so decimal places line up
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(r) for r in rows])

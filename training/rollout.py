"""Collect fixed-length rollouts from a PufferLib vector env (no Ray here).

One ``collect()`` steps every env ``rollout_steps`` times and returns flat NumPy arrays shaped
(T, N, ...), so a runner actor ships a whole rollout as a handful of arrays and never a Python
object per step. Episode returns are tracked per env (the first version shared one accumulator
across envs, which mixed episodes together).

Bootstrapping: where an episode was truncated at step t, ``bootstrap_values[t]`` is the value of
the observation it ended on. Native envs reset inside the step, so that observation comes from
the env's ``final_observations`` (or, if the env has none, the value of the state the step started
from, a one-step approximation). PufferLib's emulated envs show the final observation as the next
observation and spend the following step resetting; that dummy step is marked ``valid=False``.

Recurrent policies: each env's state is carried across steps and rounds and zeroed where an episode
ends (``training.recurrent.episode_ends``); the batch's ``state`` holds every env's state at the
start of the rollout, from which the learner replays the column.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from training.recurrent import episode_ends


class EnvOutputError(RuntimeError):
    """The env produced something the trainer cannot learn from (NaN, wrong shape)."""


def random_actions(space, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(space, spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=n)
    if isinstance(space, spaces.MultiDiscrete):
        return rng.integers(0, space.nvec, size=(n, *space.nvec.shape))
    if isinstance(space, spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype)
    raise TypeError(f"unsupported action space {space}")


def to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """``tensors`` (on one device) as NumPy arrays, in one device-to-host copy: their bytes are
    packed into one buffer there, copied once, and unpacked here (exact, whatever the dtypes)."""
    if all(t.device.type == "cpu" for t in tensors):
        return [t.numpy() for t in tensors]
    return packed_to_host(*tensors)


def packed_to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """``to_host``'s one copy, on any device (tests run it on CPU)."""
    flat = [t.detach().contiguous().reshape(-1) for t in tensors]
    raw = torch.cat([f.view(torch.uint8) for f in flat]).cpu().numpy()
    out, offset = [], 0
    for t, f in zip(tensors, flat):
        n = f.numel() * f.element_size()
        out.append(raw[offset:offset + n].view(np.dtype(str(f.dtype).removeprefix("torch."))).reshape(t.shape))
        offset += n
    return out


class RolloutCollector:
    def __init__(self, vecenv, rollout_steps: int, seed: int, policy=None, env_name: str = "env", teacher=None,
                 step_values: bool = True, rollin_max: int = 0, rollin_prob: float = 1.0, device: str = "cpu"):
        self.env = vecenv
        self.env_name = env_name
        self.num_envs = vecenv.num_agents
        self.rollout_steps = rollout_steps
        self.policy = policy  # a training.agent.Agent; None: uniform random actions (the `random` backend)
        self.teacher = teacher  # kickstarting: obs batch -> the teacher's actions, recorded beside ours
        self.rng = np.random.default_rng(seed)
        # where the policy acts (--runner-device): one host-to-device copy of the observations and
        # one copy back of the actions, log-probs and values per step (``_act``)
        self.device = torch.device(device)
        # action sampling, own stream for exact resume; on the policy's device, so the noise is drawn there
        self.torch_gen = torch.Generator(device=self.device).manual_seed(seed)
        self.obs_space = vecenv.single_observation_space
        self.act_space = vecenv.single_action_space
        self.native_reset = bool(getattr(vecenv, "autoreset_same_step", True))
        # Per-step values are only for the learner's GAE. In overlapped mode the learner computes
        # every value with its current weights (V-trace), so runners may skip the critic, except where
        # a step's value stands in for a bootstrap (emulated envs, or no final_observations).
        self.step_values = step_values or not (
            self.native_reset and getattr(vecenv, "final_observations", None) is not None)
        self._act_shape = () if isinstance(self.act_space, spaces.Discrete) else tuple(self.act_space.shape)
        obs, _ = vecenv.reset(seed=seed)
        self._check_obs(obs, where="reset")
        self.obs = np.array(obs, copy=True)
        self.present = self._agents_present()
        self.pending_reset = np.zeros(self.num_envs, dtype=bool)
        self.ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        # Roll-ins (jump-start RL): while teaching, the teacher plays the first U{0..rollin_max}
        # decisions of each episode, so the policy also acts from states deep into long episodes,
        # which its own early play would not reach within a short run. Own stream: roll-in draws
        # never shift the action sampling.
        self.rollin_max = int(rollin_max) if teacher is not None else 0
        self.rollin_prob = float(rollin_prob)
        self.rollin_rng = np.random.default_rng([seed, 0x5EED])
        self.rollin_left = self._draw_rollins(self.num_envs)
        self.ep_teacher = np.zeros(self.num_envs, dtype=np.int64)
        self.state = None  # a recurrent policy's state, one row per env: made at the first collect
        self.reports: list[dict] = []  # the last rollout's env reports (``_account``)

    # ---------------------------------------------------------------- helpers
    def _check_obs(self, obs, where: str) -> None:
        expected = (self.num_envs, *self.obs_space.shape)
        if tuple(np.shape(obs)) != expected:
            raise EnvOutputError(f"env {self.env_name!r}: observation has shape {tuple(np.shape(obs))} "
                                 f"at {where}, expected {expected}")

    def _agents_present(self) -> np.ndarray:
        """Which rows of the current observation hold an agent: PufferLib's ``masks`` (a multi-agent
        env's absent agents, dead or not yet there, are padding rows). Serial envs and PufferEnvs
        keep it in ``masks``, the Multiprocessing backend in ``batch_mask``."""
        for name in ("masks", "batch_mask"):
            mask = getattr(self.env, name, None)
            if mask is not None and np.shape(mask) == (self.num_envs,):
                return np.array(mask, dtype=bool)
        return np.ones(self.num_envs, dtype=bool)

    def _act(self, obs: np.ndarray):
        if self.policy is None:
            actions = random_actions(self.act_space, self.num_envs, self.rng)
            zeros = np.zeros(self.num_envs, dtype=np.float32)
            return actions, actions, zeros, zeros
        with torch.no_grad():
            recurrent = {} if self.state is None else {"state": self.state}
            action, logprob, value = self.policy.act(torch.as_tensor(obs).to(self.device), generator=self.torch_gen,
                                                     with_value=self.step_values, **recurrent)
        action, logprob, value = to_host(action, logprob, value)
        action = action.reshape(self.num_envs, *self._act_shape)
        env_action = action
        if isinstance(self.act_space, spaces.Box):
            env_action = np.clip(action, self.act_space.low, self.act_space.high)
        return action, env_action, logprob.astype(np.float32), value.astype(np.float32)

    def _draw_rollins(self, n: int) -> np.ndarray:
        if not self.rollin_max:
            return np.zeros(n, dtype=np.int64)
        lengths = self.rollin_rng.integers(0, self.rollin_max + 1, size=n)
        if self.rollin_prob < 1.0:
            lengths[self.rollin_rng.random(n) >= self.rollin_prob] = 0
        return lengths

    def _values(self, obs: np.ndarray, rows=slice(None)) -> np.ndarray:
        """Values of ``obs``, the observations of envs ``rows``, each from its env's current state."""
        if self.policy is None or len(obs) == 0:
            return np.zeros(len(obs), dtype=np.float32)
        if isinstance(rows, torch.Tensor):
            rows = rows.to(self.device)
        recurrent = {} if self.state is None else {"state": {k: v[rows] for k, v in self.state.items()}}
        with torch.no_grad():
            value = self.policy.values(torch.as_tensor(obs).to(self.device), **recurrent)
        return value.cpu().numpy().astype(np.float32).reshape(-1)

    def _start_state(self) -> dict | None:
        """The recurrent state this rollout starts from (NumPy copies, for the batch)."""
        if not getattr(self.policy, "recurrent", False):
            self.state = None
            return None
        if self.state is None:
            self.state = self.policy.initial_state(self.num_envs, self.device)
        return {k: v.cpu().numpy().copy() for k, v in self.state.items()}

    # ---------------------------------------------------------------- collect
    def collect(self, teach: bool | str = False, steps: int | None = None) -> tuple[dict, list[dict]]:
        """Returns (batch of (T, N, ...) arrays, finished episodes' metrics). With ``teach``, the
        teacher's actions on the same observations come back as ``teacher_actions``; with
        ``teach="drive"`` the teacher also plays them (they are the recorded ``actions``, and the
        batch is marked ``driven``): the kickstarting warm-up clones the teacher on its own states.
        With roll-ins (``rollin_max``) and ``teach``, the steps the teacher played are marked in
        ``teacher_played`` (T, N); their recorded log-prob is 0, the deterministic teacher's own.
        ``steps``: this rollout's length when not ``rollout_steps`` (a run's shortened last round).
        Each finished episode's dict carries ``_step``, the step of the rollout it ended at. The
        env's other reports (info dicts without an ``env_index``) are left in ``self.reports``."""
        T, N = steps or self.rollout_steps, self.num_envs
        obs_buf = np.empty((T, N, *self.obs_space.shape), dtype=self.obs.dtype)
        act_shape = self._act_shape
        act_dtype = np.float32 if isinstance(self.act_space, spaces.Box) else np.int64
        actions = np.empty((T, N, *act_shape), dtype=act_dtype)
        logprobs = np.empty((T, N), dtype=np.float32)
        values = np.empty((T, N), dtype=np.float32)
        rewards = np.empty((T, N), dtype=np.float32)
        terminals = np.empty((T, N), dtype=bool)
        truncations = np.empty((T, N), dtype=bool)
        valid = np.empty((T, N), dtype=bool)
        final_values = np.zeros((T, N), dtype=np.float32)
        drive = teach == "drive" and self.teacher is not None
        teach = bool(teach) and self.teacher is not None
        teacher_actions = np.empty((T, N, *act_shape), dtype=act_dtype) if teach else None
        rollin = teach and not drive and self.rollin_max > 0
        teacher_played = np.zeros((T, N), dtype=bool) if rollin else None
        episodes: list[dict] = []
        self.reports = []
        start_state = self._start_state()

        for t in range(T):
            obs_buf[t] = self.obs
            action, env_action, logprobs[t], values[t] = self._act(self.obs)
            if teach:
                teacher_actions[t] = self.teacher(self.obs)
            if drive:
                action = env_action = teacher_actions[t]
            elif rollin and (self.rollin_left > 0).any():
                played = teacher_played[t] = self.rollin_left > 0
                action = env_action = np.where(played, teacher_actions[t], action)
                logprobs[t][played] = 0.0
                self.rollin_left[played] -= 1
                self.ep_teacher += played
            actions[t] = action
            valid[t] = ~self.pending_reset & self.present
            obs, rew, term, trunc, infos = self.env.step(env_action)
            self.present = self._agents_present()
            self._check_obs(obs, where=f"step {t}")
            rewards[t] = rew
            terminals[t] = term
            truncations[t] = trunc
            done = terminals[t] | truncations[t]
            if self.native_reset and done.any():
                finals = getattr(self.env, "final_observations", None)
                idx = np.flatnonzero(truncations[t])
                if finals is not None:  # from the state the step left, before it is zeroed below
                    final_values[t, idx] = self._values(np.asarray(finals)[idx], torch.from_numpy(idx))
                else:
                    final_values[t, idx] = values[t, idx]
            self._account(t, rewards[t], terminals[t], truncations[t], valid[t], infos, episodes)
            if self.state is not None:
                ends = torch.from_numpy(episode_ends(terminals[t], truncations[t], valid[t])).to(self.device)
                for v in self.state.values():
                    v[ends] = 0.0
            if rollin and done.any():  # native envs: a finished env starts its next episode now
                self.rollin_left[done] = self._draw_rollins(int(done.sum()))
            if not self.native_reset:
                self.pending_reset = done.copy()
            self.obs = np.array(obs, copy=True)

        if not (np.isfinite(rewards).all() and np.isfinite(obs_buf).all()):
            field = "reward" if not np.isfinite(rewards).all() else "observation"
            raise EnvOutputError(f"env {self.env_name!r}: non-finite {field} (NaN or inf) in a rollout")

        last_values = self._values(self.obs)
        if self.native_reset:
            bootstrap = final_values
        else:  # the final observation is the next one: its value is the next step's value
            bootstrap = np.concatenate([values[1:], last_values[None]], axis=0)
        batch = dict(
            obs=obs_buf, actions=actions, logprobs=logprobs, values=values, rewards=rewards,
            terminals=terminals, truncations=truncations, valid=valid,
            bootstrap_values=bootstrap.astype(np.float32), last_values=last_values,
        )
        if teach:
            batch["teacher_actions"] = teacher_actions
        if drive:
            batch["driven"] = True
        if rollin:
            batch["teacher_played"] = teacher_played
        if start_state is not None:
            batch["state"] = start_state
        return batch, episodes

    # ---------------------------------------------------------------- exact resume
    @property
    def exact_state(self) -> bool:
        """True when the env can snapshot its state, so a resume continues the same trajectories."""
        return callable(getattr(self.env, "get_state", None)) and callable(getattr(self.env, "set_state", None))

    def state_dict(self) -> dict:
        return dict(
            obs=self.obs.copy(), pending_reset=self.pending_reset.copy(), present=self.present.copy(),
            ep_return=self.ep_return.copy(),
            ep_length=self.ep_length.copy(), numpy_rng=self.rng.bit_generator.state,
            # as NumPy: whoever fetches this state (the learner, writing a checkpoint) needs no torch
            torch_rng=self.torch_gen.get_state().numpy(), env=self.env.get_state() if self.exact_state else None,
            rollin_rng=self.rollin_rng.bit_generator.state, rollin_left=self.rollin_left.copy(),
            ep_teacher=self.ep_teacher.copy(),
            recurrent_state=None if self.state is None else {k: v.cpu().numpy().copy() for k, v in self.state.items()},
        )

    def load_state_dict(self, state: dict) -> bool:
        """Restore a snapshot. Returns False when the env could not be restored (the env then keeps
        its fresh episodes: the resume is exact in accounting, not in trajectories)."""
        self.rng.bit_generator.state = state["numpy_rng"]
        rng = state["torch_rng"]  # NumPy; checkpoints written before it was NumPy hold a tensor
        self.torch_gen.set_state(rng if isinstance(rng, torch.Tensor) else torch.from_numpy(np.array(rng, np.uint8)))
        if state.get("env") is None or not self.exact_state:
            return False
        self.env.set_state(state["env"])
        self.obs = np.array(state["obs"], copy=True)
        self.pending_reset = state["pending_reset"].copy()
        self.present = np.array(state.get("present", np.ones(self.num_envs, bool)), dtype=bool)  # older: none
        self.ep_return = state["ep_return"].copy()
        self.ep_length = state["ep_length"].copy()
        if "rollin_rng" in state:  # checkpoints from before roll-ins have none
            self.rollin_rng.bit_generator.state = state["rollin_rng"]
            self.rollin_left = state["rollin_left"].copy()
            self.ep_teacher = state["ep_teacher"].copy()
        if state.get("recurrent_state") is not None:
            self.state = {k: torch.from_numpy(np.array(v, copy=True)).to(self.device)
                          for k, v in state["recurrent_state"].items()}
        return True

    def _account(self, t, rew, term, trunc, valid, infos, episodes) -> None:
        """Episode returns and lengths per env; an info dict with an ``env_index`` adds its numbers
        to that env's finished episode, any other info dict with numbers is an env report
        (PufferLib's C envs, for one, report aggregated episode statistics every so often, with
        ``n``, the episodes a report covers)."""
        for info in infos:
            if isinstance(info, dict) and "env_index" not in info:
                numbers = {k: float(v) for k, v in info.items()
                           if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_))}
                if numbers:
                    self.reports.append({**numbers, "_step": int(t)})
        self.ep_return += np.where(valid, rew, 0.0)
        self.ep_length += valid
        # a padding row (an absent agent's, or an emulated env's reset step) ends no episode
        done = np.flatnonzero((term | trunc) & valid)
        if len(done) == 0:
            return
        by_env = {int(i["env_index"]): i for i in infos if isinstance(i, dict) and "env_index" in i}
        for i in done:
            ep = {k: float(v) for k, v in by_env.get(int(i), {}).items()
                  if k != "env_index" and isinstance(v, (int, float, np.number))}
            ep.update(episode_return=float(self.ep_return[i]), episode_length=int(self.ep_length[i]),
                      terminated=int(term[i]), truncated=int(trunc[i] and not term[i]), _step=int(t))
            if self.rollin_max:
                ep["teacher_decisions"] = int(self.ep_teacher[i])
            episodes.append(ep)
        self.ep_return[done] = 0.0
        self.ep_length[done] = 0
        self.ep_teacher[done] = 0

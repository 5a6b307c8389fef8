"""Structured and pixel observations: PufferLib's emulated bytes decode back to the env's own
values and reach the policy part by part (one-hots, floats); images get the Nature CNN and travel
as bytes from the runner to the learner's minibatches; both sit behind --policy-lstm-size."""

import types
import warnings

import gymnasium
import numpy as np
import pufferlib
import pufferlib.emulation
import pufferlib.models
import pufferlib.pytorch
import pytest
import torch
from gymnasium import spaces

import training.learner as learner_module
from training.agent import build_agent, make_spec, set_weights
from training.config import ConfigError, TrainConfig, config_from_args
from training.encoders import NatureCNN, StructuredEncoder, image_layout, observation_encoder
from training.envs.env_info import EnvInfo
from training.envs.plugin import BUILTIN_POLICIES, policy_ref
from training.envs.registry import make_vecenv
from training.learner import PPOLearner
from training.policy import CNNPolicy, MLPPolicy, default_policy
from training.ppo import ppo_update
from training.recurrent import LSTMWrapper
from training.rollout import RolloutCollector

DICT_OBS = "training.envs.examples:dict_obs"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small batches run faster on one thread; two OpenMP threads on a busy 2-core machine made a
    batch of four frames take 0.1 s instead of 1 ms (each parallel region waits for a thread the
    machine has descheduled)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RecordingEnv(gymnasium.Env):
    """Random observations of ``space``; ``last`` is the raw observation the env last returned."""

    def __init__(self, space):
        self.observation_space = space
        self.action_space = spaces.Discrete(2)
        self.last = None

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.observation_space.seed(seed)
        self.last = self.observation_space.sample()
        return self.last, {}

    def step(self, action):
        self.last = self.observation_space.sample()
        return self.last, 0.0, False, False, {}


NESTED = spaces.Dict({
    "a": spaces.Discrete(5, start=2),
    "b": spaces.Box(-2.0, 2.0, (2, 3), np.float32),
    "c": spaces.Tuple((spaces.Discrete(3), spaces.MultiDiscrete([2, 4]))),
    "d": spaces.MultiBinary(3),
})


def emulated_batch(space, n=6, seed=0):
    """``n`` observations of ``space`` as PufferLib's GymnasiumPufferEnv emulates them (B, bytes),
    the raw observations behind them, and the emulated env."""
    env = pufferlib.emulation.GymnasiumPufferEnv(env=RecordingEnv(space))
    obs, _ = env.reset(seed=seed)
    rows, raw = [obs.copy()], [env.env.last]
    for _ in range(n - 1):
        obs, *_ = env.step(np.array([0]))
        rows.append(obs.copy())
        raw.append(env.env.last)
    return torch.from_numpy(np.concatenate([r.reshape(1, -1) for r in rows])), raw, env


def one_hot(values, n, start=0):
    out = np.zeros((len(values), n), np.float32)
    out[np.arange(len(values)), np.asarray(values) - start] = 1.0
    return out


def test_a_nested_dict_decodes_to_the_envs_own_values_and_encodes_part_by_part_in_order():
    x, raw, env = emulated_batch(NESTED)
    assert x.dtype == torch.uint8 and env.emulated  # PufferLib's byte layout, as the runners record it
    info = EnvInfo.of(env)
    assert info.native_observation_space is NESTED
    encoder = observation_encoder(info)
    assert isinstance(encoder, StructuredEncoder)
    native = encoder.nativize(x)
    assert torch.equal(native["a"], torch.tensor([r["a"] for r in raw], dtype=torch.int32))
    assert torch.equal(native["b"], torch.from_numpy(np.stack([r["b"] for r in raw])))
    assert torch.equal(native["c"][0], torch.tensor([r["c"][0] for r in raw], dtype=torch.int32))
    assert torch.equal(native["c"][1], torch.from_numpy(np.stack([r["c"][1] for r in raw]).astype(np.int32)))
    assert torch.equal(native["d"], torch.from_numpy(np.stack([r["d"] for r in raw])))
    # the same parts as PufferLib's own nativize_tensor reads them
    with warnings.catch_warnings():  # its torch.compile size checks, deprecated in this torch
        warnings.simplefilter("ignore", FutureWarning)
        reference = pufferlib.pytorch.nativize_tensor(x, pufferlib.pytorch.nativize_dtype(env.emulated))
    assert torch.equal(native["b"], reference["b"]) and torch.equal(native["a"], reference["a"].reshape(-1))

    # the stated order: Dict keys as the space lists them, depth-first; one-hots of value - start
    assert encoder.parts == [("a",), ("b",), ("c", 0), ("c", 1), ("d",)]
    expected = np.concatenate([
        one_hot([r["a"] for r in raw], 5, start=2),
        np.stack([r["b"].reshape(-1) for r in raw]),
        one_hot([r["c"][0] for r in raw], 3),
        one_hot([r["c"][1][0] for r in raw], 2), one_hot([r["c"][1][1] for r in raw], 4),
        np.stack([r["d"] for r in raw]).astype(np.float32),
    ], axis=1)
    features = encoder(x)
    assert encoder.out_dim == 5 + 6 + 3 + 2 + 4 + 3 and features.dtype == torch.float32
    assert torch.equal(features, torch.from_numpy(expected))
    # a batch cast to floats on the way (bytes are exact in float32) decodes the same
    assert torch.equal(encoder(x.float()), features)
    # mutations: the bytes read as floats (what the MLP saw before), or one byte of the cue moved
    as_floats = x.reshape(len(x), -1).float()
    assert as_floats.shape != features.shape or not torch.equal(as_floats, features)
    moved = x.clone()
    moved[:, 0] += 1  # the low byte of "a": the next value
    assert not torch.equal(encoder(moved), features)
    # a value outside the Discrete's range (an all-zero observation: "a" = 0 < start) one-hots to zeros
    assert encoder(torch.zeros_like(x[:1]))[0, :5].sum() == 0


def test_a_tuple_with_aligned_parts_and_a_bare_discrete_decode():
    """A uint8 pair then a Discrete: the int32 sits at byte 4, after 2 bytes of padding."""
    space = spaces.Tuple((spaces.Box(0, 255, (2,), np.uint8), spaces.Discrete(3)))
    x, raw, env = emulated_batch(space)
    encoder = observation_encoder(EnvInfo.of(env))
    pair, value = encoder.nativize(x)
    assert torch.equal(pair, torch.from_numpy(np.stack([r[0] for r in raw])))
    assert value.tolist() == [int(r[1]) for r in raw]
    assert torch.equal(encoder(x)[:, 2:], torch.from_numpy(one_hot([r[1] for r in raw], 3)))

    # FrozenLake: a bare Discrete(16), emulated (as int32, training.envs.discrete_obs)
    lake = make_vecenv("gym:FrozenLake-v1", 3, seed=0)
    info = EnvInfo.of(lake)
    assert isinstance(info.native_observation_space, spaces.Discrete)
    obs, _ = lake.reset(seed=0)
    for _ in range(5):
        obs, *_ = lake.step(np.array([1, 2, 2]))
    cells = [e.env.unwrapped.s for e in lake.envs]
    encoder = observation_encoder(info)
    assert encoder.nativize(torch.from_numpy(obs)).tolist() == cells
    assert torch.equal(encoder(torch.from_numpy(obs)), torch.from_numpy(one_hot(cells, 16)))


def test_spaces_without_an_emulated_layout_and_old_constructions():
    box = spaces.Box(-1.0, 1.0, (3,), np.float32)
    info = EnvInfo(box, spaces.Discrete(2))  # the old two-argument form
    assert info.native_observation_space is box and info.emulated is None
    policy = MLPPolicy(info, hidden=(8,))
    assert {k.split(".")[0] for k in policy.state_dict()} == {"actor", "critic"}  # no encoder keys
    continuous = MLPPolicy(EnvInfo(box, spaces.Box(-1, 1, (2,))), hidden=(8,))
    assert set(continuous.state_dict()) == {"actor_logstd", "actor.0.weight", "actor.0.bias", "actor.2.weight",
                                            "actor.2.bias", "critic.0.weight", "critic.0.bias", "critic.2.weight",
                                            "critic.2.bias"}
    with pytest.raises(TypeError, match="emulated"):
        MLPPolicy(EnvInfo(spaces.Dict({"a": spaces.Discrete(2)}), spaces.Discrete(2)))


def spy_on_updates(monkeypatch) -> list[dict]:
    """The batches the learner hands ppo_update."""
    seen = []

    def spy(policy, optimizer, batch, **kw):
        seen.append({k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        return ppo_update(policy, optimizer, batch, **kw)

    monkeypatch.setattr(learner_module, "ppo_update", spy)
    return seen


def learner_round(cfg, env, rounds=1, off_policy=False):
    """Ray-free rounds: a runner's rollout with the learner's weights, then an update. Returns the
    learner, its metrics and the last rollout."""
    info = EnvInfo.of(env)
    learner = PPOLearner(cfg, info)
    runner = build_agent(learner.policy_spec, info)
    collector = RolloutCollector(env, cfg.ppo_rollout_steps, seed=cfg.seed, policy=runner)
    for _ in range(rounds):
        set_weights(runner, learner.weights())
        batch, episodes = collector.collect()
        metrics = learner.learn([batch], off_policy=off_policy)
    return learner, metrics, batch


def test_blackjack_a_tuple_of_discretes_acts_and_updates_through_the_default_policy(monkeypatch):
    cfg = config_from_args({"env": "gym:Blackjack-v1", "ppo_num_envs": 4, "ppo_num_workers": 1,
                            "ppo_rollout_steps": 16, "ppo_num_minibatches": 2, "ppo_update_epochs": 2,
                            "policy_hidden": "16", "total_env_steps": 128, "window_env_steps": 64})
    assert cfg.policy == "default"
    env = make_vecenv(cfg.env, 4, seed=0)
    info = EnvInfo.of(env)
    assert info.native_observation_space == spaces.Tuple(
        (spaces.Discrete(32, dtype=np.int32), spaces.Discrete(11, dtype=np.int32), spaces.Discrete(2, dtype=np.int32)))
    seen = spy_on_updates(monkeypatch)
    learner, metrics, batch = learner_round(cfg, env, rounds=2)
    policy = learner.policy.policy
    assert isinstance(policy, MLPPolicy) and policy.encoder.out_dim == 32 + 11 + 2
    assert seen[-1]["obs"].dtype == torch.int32 and batch["obs"].dtype == np.int32  # never floats on the way
    sums, dealer, ace = policy.encoder.nativize(seen[-1]["obs"])
    assert 4 <= int(sums.min()) and int(sums.max()) <= 31 and 1 <= int(dealer.min()) and int(dealer.max()) <= 10
    assert set(ace.tolist()) <= {0, 1}
    assert np.isfinite(metrics["value_loss"]) and metrics["num_minibatch_updates"] == 4
    torch.manual_seed(cfg.seed)  # as PPOLearner does: its initial weights
    before = build_agent(learner.policy_spec, info).state_dict()
    assert all(k in before for k in learner.weights())
    moved = [k for k, v in learner.weights().items() if not np.array_equal(v, before[k].numpy())]
    assert len(moved) == len(before), "the updates must move every weight"


@pytest.mark.slow
def test_decoded_parts_learn_the_dict_env_and_its_bytes_read_as_floats_do_not(tmp_path):
    """DictObsEnv: the action must name the cue, a Discrete(8) beside 8 noise floats; optimal
    return 8, chance 1. Each step's reward depends on that step alone (a contextual bandit), so
    gamma is 0. Through the Python API (embedded Ray, 12-25 s on a busy 2-core machine): 12,288
    steps of 16 envs, the default policy (an MLP of 64, 64 over the cue's one-hot and the noise)
    must average >= 95% of the optimum (7.6) over the last window's training episodes (Ray-free
    runs of these settings: 7.97-7.98 over the last quarter, seeds 0-2). An MLP over the emulated
    bytes read as floats, the same settings Ray-free (~2 s), stays at chance (measured 0.86-1.03):
    the test of what the decoding buys."""
    from ray_app import api

    settings = {"env": DICT_OBS, "total_env_steps": 12_288, "window_env_steps": 3_072, "ppo_num_envs": 16,
                "ppo_num_workers": 1, "ppo_rollout_steps": 32, "ppo_num_minibatches": 4, "ppo_update_epochs": 4,
                "ppo_learning_rate": 3e-3, "ppo_gamma": 0.0, "policy_hidden": "64,64"}
    run = api.train({**settings, "run_root": str(tmp_path), "run_id": "dict"})
    returns = [w["return_mean"] for w in run.windows]
    assert returns[-1] >= 0.95 * 8, returns

    cfg = config_from_args({**settings, "policy": f"{__name__}:bytes_mlp"})
    env = make_vecenv(DICT_OBS, 16, seed=0)
    learner = PPOLearner(cfg, EnvInfo.of(env))
    runner = build_agent(learner.policy_spec, EnvInfo.of(env))
    collector = RolloutCollector(env, 32, seed=0, policy=runner)
    late = []
    for r in range(cfg.total_rounds):
        set_weights(runner, learner.weights())
        batch, episodes = collector.collect()
        learner.learn([batch])
        if r >= cfg.total_rounds * 3 // 4:
            late += [e["episode_return"] for e in episodes]
    assert np.mean(late) <= 1.5, np.mean(late)


def bytes_mlp(env, hidden=(64, 64), core_size=None):
    """The MLP over the observation as it travels: PufferLib's bytes as floats (the old input)."""
    return MLPPolicy(EnvInfo(env.single_observation_space, env.single_action_space), hidden, core_size=core_size)


# ------------------------------------------------------------------------------------------ pixels
def fake_env(obs_space, action_space=spaces.Discrete(6)):
    """What a policy reads of an env (pufferlib.models reads the same attributes)."""
    return types.SimpleNamespace(single_observation_space=obs_space, single_action_space=action_space)


def image(shape, dtype=np.uint8):
    return spaces.Box(0, 255, shape, dtype)


def test_default_policy_picks_the_cnn_for_images_only():
    assert image_layout(image((84, 84, 4))) == (True, (4, 84, 84))
    assert image_layout(image((4, 84, 84))) == (False, (4, 84, 84))
    assert image_layout(image((4, 84, 4))) == (False, (4, 84, 4))  # ambiguous: channels first
    for shape in ((84, 84, 4), (4, 84, 84), (84, 84, 1), (3, 64, 96)):
        assert isinstance(default_policy(fake_env(image(shape)), hidden=(32,)), CNNPolicy), shape
    others = [image((84, 84, 4), np.float32), image((84, 84, 16)), image((84, 84)), image((7,)),
              spaces.Box(-1, 1, (4,), np.float32)]
    for space in others:
        policy = default_policy(fake_env(space), hidden=(8,))
        assert type(policy) is MLPPolicy, space
    assert BUILTIN_POLICIES == {"default": "training.policy:default_policy", "mlp": "training.policy:MLPPolicy",
                                "cnn": "training.policy:CNNPolicy"}
    assert TrainConfig().policy == "default" and policy_ref("cnn", "gym:CartPole-v1") == "training.policy:CNNPolicy"
    cfg = config_from_args({"env": "gym:CartPole-v1", "policy_hidden": "32"})
    spec = make_spec(cfg)
    assert spec["factory"] == "training.policy:default_policy" and spec["kwargs"] == {"hidden": [32]}


def test_cnn_is_pufferlibs_convolutional_layer_for_layer():
    """Same parameter count and shapes as pufferlib.models.Convolutional (hidden 512), and with its
    weights copied, the same outputs: the same network, pixels divided by 255 included."""
    env = fake_env(image((84, 84, 4)))
    torch.manual_seed(0)
    ours = CNNPolicy(env)
    theirs = pufferlib.models.Convolutional(env, framestack=4, flat_size=64 * 7 * 7, channels_last=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(theirs) == 1_687_719
    assert [p.shape for p in ours.encoder.parameters()] == [p.shape for p in theirs.network.parameters()]
    theirs.network.load_state_dict(ours.encoder.network.state_dict())
    theirs.actor.load_state_dict(ours.actor.state_dict())
    theirs.value_fn.load_state_dict(ours.critic.state_dict())
    x = torch.randint(0, 256, (5, 84, 84, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (logits, values), (their_logits, their_values) = ours(x), theirs(x)
    torch.testing.assert_close(logits, their_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(values, their_values, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours(x * 0 + 255)[1], values)  # the pixels matter
    assert logits.abs().max() < 0.5  # the 0.01 policy head: near uniform at the start


def test_channels_last_and_channels_first_give_identical_outputs():
    last = CNNPolicy(fake_env(image((84, 84, 4))), hidden=(64,))
    first = CNNPolicy(fake_env(image((4, 84, 84))), hidden=(64,))
    first.load_state_dict(last.state_dict())
    x = torch.randint(0, 256, (3, 84, 84, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = last(x), first(x.permute(0, 3, 1, 2).contiguous())
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        c = first(x.reshape(3, 4, 84, 84))  # the same bytes, misread as channels-first: not the same
    assert not torch.equal(a[0], c[0])


def test_small_images_are_refused_by_the_cnn_and_get_the_mlp_by_default():
    """A 7 x 7 x 3 grid of bytes (MiniGrid's) is an image by its space, but too small for the Nature
    CNN: the default policy reads it with the MLP; asking for the CNN names the flag."""
    assert isinstance(default_policy(fake_env(image((7, 7, 3)))), MLPPolicy)
    with pytest.raises(ConfigError, match="--policy.*too small.*36"):
        CNNPolicy(fake_env(image((32, 32, 3))))
    with pytest.raises(ConfigError, match="--policy"):
        CNNPolicy(fake_env(image((4, 35, 84))))
    CNNPolicy(fake_env(image((1, 36, 36))), hidden=(8,))  # the smallest the Nature CNN takes
    with pytest.raises(ConfigError, match="--policy.*image"):
        CNNPolicy(fake_env(spaces.Box(-1, 1, (84, 84, 4), np.float32)))


class PixelsEnv(pufferlib.PufferEnv):
    """A native PufferEnv of (84, 84, 4) uint8 frames: each frame is one grey level, bright (>= 128)
    or dark; action 1 on a bright frame or 0 on a dark one earns 1. Episodes of 6 steps (terminal)."""

    def __init__(self, num_envs=4, seed=0, shape=(84, 84, 4), buf=None):
        self.single_observation_space = spaces.Box(0, 255, shape, np.uint8)
        self.single_action_space = spaces.Discrete(2)
        self.num_agents = num_envs
        super().__init__(buf)
        self.rng = np.random.default_rng(seed)
        self.t = np.zeros(num_envs, np.int64)

    def _draw(self):
        self.level = self.rng.integers(0, 256, self.num_agents)
        self.observations[:] = self.level.astype(np.uint8)[:, None, None, None]

    def reset(self, seed=None):
        self.t[:] = 0
        self._draw()
        return self.observations, []

    def step(self, actions):
        self.rewards[:] = np.asarray(actions) == (self.level >= 128)
        self.t += 1
        self.terminals[:] = self.t >= 6
        self.truncations[:] = False
        self.t[self.terminals] = 0
        self._draw()
        return self.observations, self.rewards, self.terminals, self.truncations, []

    def close(self):
        pass


def pixels_config(**flags):
    settings = dict(env="test:pixels", ppo_num_envs=4, ppo_num_workers=1, ppo_rollout_steps=8, ppo_num_minibatches=2,
                    ppo_update_epochs=1, policy_hidden="32", total_env_steps=64)
    return TrainConfig(**{**settings, **flags})


def test_frames_travel_as_bytes_to_the_learners_minibatches(monkeypatch):
    seen = spy_on_updates(monkeypatch)
    env = PixelsEnv()
    learner, metrics, batch = learner_round(pixels_config(), env)
    assert isinstance(learner.policy.policy, CNNPolicy) and learner.policy.policy.encoder.channels_last
    assert batch["obs"].dtype == np.uint8 and seen[-1]["obs"].dtype == torch.uint8
    assert seen[-1]["obs"].shape == (32, 84, 84, 4)
    assert np.isfinite(metrics["policy_loss"]) and np.isfinite(metrics["value_loss"])
    # overlapped mode's V-trace re-evaluates the batch (more minibatches than envs): bytes there too
    _, metrics, _ = learner_round(pixels_config(ppo_num_minibatches=8), env, off_policy=True)
    assert seen[-1]["obs"].dtype == torch.uint8 and np.isfinite(metrics["value_loss"])
    with pytest.raises(TypeError, match="--ppo-norm-obs"):
        build_agent({**learner.policy_spec, "obs_norm": True}, EnvInfo.of(env))


def test_norm_obs_refuses_a_dict_observation_naming_it():
    info = EnvInfo.of(make_vecenv(DICT_OBS, 2, seed=0))
    spec = {"version": 2, "factory": BUILTIN_POLICIES["default"], "kwargs": {"hidden": [8]}, "obs_norm": True}
    with pytest.raises(TypeError, match="--ppo-norm-obs.*Dict"):
        build_agent(spec, info)


@pytest.mark.parametrize("kind", ["dict", "pixels"])
def test_an_lstm_sits_behind_the_structured_encoder_and_the_cnn(kind, monkeypatch):
    if kind == "dict":
        cfg = TrainConfig(env=DICT_OBS, ppo_num_envs=4, ppo_num_workers=1, ppo_rollout_steps=12,
                          ppo_num_minibatches=2, ppo_update_epochs=2, policy_hidden="16", policy_lstm_size=8,
                          total_env_steps=96)
        env, features = make_vecenv(DICT_OBS, 4, seed=0), 8 + 8  # the cue's one-hot and the noise
    else:
        cfg = pixels_config(policy_lstm_size=8)
        env, features = PixelsEnv(), 32  # the CNN's linear layer
    seen = spy_on_updates(monkeypatch)
    learner, metrics, batch = learner_round(cfg, env, rounds=2)
    wrapper = learner.policy.policy
    assert isinstance(wrapper, LSTMWrapper) and wrapper.input_size == features == wrapper.policy.encoder.out_dim
    assert batch["state"]["lstm_h"].shape == (4, 8) and np.abs(batch["state"]["lstm_h"]).max() > 0
    assert seen[-1]["obs"].dtype == torch.uint8  # frames, or PufferLib's bytes of the Dict
    assert np.isfinite(metrics["value_loss"]) and metrics["num_minibatch_updates"] == 2 * cfg.ppo_update_epochs
    heads = wrapper.policy.critic
    first = heads[0] if isinstance(heads, torch.nn.Sequential) else heads
    assert first.in_features == 8  # the heads read the LSTM's output (core_size)


def test_nature_cnn_alone_is_an_encoder_with_out_dim():
    cnn = NatureCNN(image((3, 64, 64)), hidden=(128, 32))
    out = cnn(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert out.shape == (2, 32) == (2, cnn.out_dim)

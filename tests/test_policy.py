"""The default policy through the trainer's Agent: shapes, spec round trip, weights, distributions
checked against torch.distributions, and the policy plug-in convention."""

import json
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Normal

from training.agent import build_agent, get_weights, mlp_agent, set_weights
from training.envs.env_info import EnvInfo

OBS = gymnasium.spaces.Box(0, 255, (2, 3), np.uint8)  # non-flat, non-float on purpose
SPACES = {
    "discrete": gymnasium.spaces.Discrete(3),
    "multidiscrete": gymnasium.spaces.MultiDiscrete([3, 4, 5]),
    "box": gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32),
}
B = 5


def make(kind, seed=0):
    torch.manual_seed(seed)
    return mlp_agent(OBS, SPACES[kind], hidden=(8, 8))


def obs_batch(seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (B, 2, 3), dtype=np.uint8))


@pytest.mark.parametrize("kind,shape,dtype", [("discrete", (B,), torch.int64),
                                              ("multidiscrete", (B, 3), torch.int64),
                                              ("box", (B, 2), torch.float32)])
def test_act_shapes_and_dtypes(kind, shape, dtype):
    policy = make(kind)
    action, logprob, value = policy.act(obs_batch())
    assert action.shape == shape and action.dtype == dtype
    assert logprob.shape == (B,) and logprob.dtype == torch.float32
    assert value.shape == (B,) and value.dtype == torch.float32
    lp, ent, v = policy.evaluate(obs_batch(), action)
    assert lp.shape == ent.shape == v.shape == (B,)
    torch.testing.assert_close(lp, logprob)
    torch.testing.assert_close(v, value)
    if kind != "box":
        assert SPACES[kind].contains(action[0].numpy().astype(SPACES[kind].dtype))


def test_multidiscrete_logprob_and_entropy_sum_components():
    policy = make("multidiscrete")
    obs = obs_batch()
    with torch.no_grad():
        logits, _ = policy(obs)
        action, logprob, _ = policy.act(obs)
        _, entropy, _ = policy.evaluate(obs, action)
    dists = [Categorical(logits=lg) for lg in torch.split(logits, [3, 4, 5], dim=-1)]
    torch.testing.assert_close(logprob, sum(d.log_prob(action[:, i]) for i, d in enumerate(dists)))
    torch.testing.assert_close(entropy, sum(d.entropy() for d in dists))


def test_box_logprob_and_entropy_match_normal():
    policy = make("box")
    with torch.no_grad():
        policy.policy.actor_logstd.copy_(torch.tensor([[-0.5, 0.3]]))
    obs = obs_batch()
    action = torch.randn(B, 2) * 2
    with torch.no_grad():
        (mean, log_std), _ = policy(obs)
        logprob, entropy, _ = policy.evaluate(obs, action)
    assert torch.equal(log_std, policy.policy.actor_logstd.expand(B, 2))
    dist = Normal(mean, torch.tensor([[-0.5, 0.3]]).exp())
    torch.testing.assert_close(logprob, dist.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))


def test_deterministic_act_is_argmax_or_mean():
    obs = obs_batch()
    with torch.no_grad():
        p = make("discrete")
        logits, _ = p(obs)
        assert torch.equal(p.act(obs, deterministic=True)[0], logits.argmax(-1))
        p = make("multidiscrete")
        logits, _ = p(obs)
        expected = torch.stack([lg.argmax(-1) for lg in torch.split(logits, [3, 4, 5], -1)], -1)
        assert torch.equal(p.act(obs, deterministic=True)[0], expected)
        p = make("box")
        (mean, _), _ = p(obs)
        assert torch.equal(p.act(obs, deterministic=True)[0], mean)


def test_discrete_sampling_follows_softmax():
    torch.manual_seed(0)
    policy = mlp_agent(gymnasium.spaces.Box(-1, 1, (1,)), gymnasium.spaces.Discrete(3), hidden=())
    with torch.no_grad():
        policy.policy.actor[-1].weight.zero_()
        policy.policy.actor[-1].bias.copy_(torch.tensor([2.0, 0.0, -1.0]))
    obs = torch.zeros(20000, 1)
    with torch.no_grad():
        action, _, _ = policy.act(obs, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(action, minlength=3).float() / len(action)
    torch.testing.assert_close(freq, torch.softmax(torch.tensor([2.0, 0.0, -1.0]), 0), atol=0.015, rtol=0)


def test_box_sampling_uses_mean_and_std():
    policy = mlp_agent(gymnasium.spaces.Box(-1, 1, (1,)), SPACES["box"], hidden=())
    with torch.no_grad():
        policy.policy.actor[-1].weight.zero_()
        policy.policy.actor[-1].bias.copy_(torch.tensor([0.5, -2.0]))
        policy.policy.actor_logstd.copy_(torch.tensor([[0.0, np.log(3.0)]]))
        action, _, _ = policy.act(torch.zeros(20000, 1), generator=np.random.default_rng(0))
    torch.testing.assert_close(action.mean(0), torch.tensor([0.5, -2.0]), atol=0.06, rtol=0)
    torch.testing.assert_close(action.std(0), torch.tensor([1.0, 3.0]), atol=0.06, rtol=0)


@pytest.mark.parametrize("kind", list(SPACES))
def test_sampling_is_reproducible_with_generator(kind):
    policy = make(kind)
    for make_gen in (lambda: torch.Generator().manual_seed(3), lambda: np.random.default_rng(3)):
        a1 = policy.act(obs_batch(), generator=make_gen())[0]
        a2 = policy.act(obs_batch(), generator=make_gen())[0]
        assert torch.equal(a1, a2)


@pytest.mark.parametrize("kind", list(SPACES))
def test_act_without_value_skips_only_the_critic(kind):
    policy = make(kind)
    with torch.no_grad():
        a1, lp1, v1 = policy.act(obs_batch(), generator=torch.Generator().manual_seed(5))
        a2, lp2, v2 = policy.act(obs_batch(), generator=torch.Generator().manual_seed(5), with_value=False)
    assert torch.equal(a1, a2) and torch.equal(lp1, lp2)
    assert torch.equal(v2, torch.zeros(B)) and not torch.equal(v1, v2)


@pytest.mark.parametrize("kind", list(SPACES))
def test_spec_and_weights_round_trip(kind):
    policy = make(kind, seed=0)
    text = json.dumps(policy.spec, allow_nan=False)  # strict JSON, no Infinity
    clone = build_agent(json.loads(text), EnvInfo(OBS, SPACES[kind]))
    obs = obs_batch()
    with torch.no_grad():
        clone_before = clone.evaluate(obs, policy.act(obs)[0])[2]
        assert not torch.equal(clone_before, policy(obs)[1])  # fresh init differs
        set_weights(clone, get_weights(policy))
        action = policy.act(obs)[0]
        for a, b in zip(policy.evaluate(obs, action), clone.evaluate(obs, action)):
            assert torch.equal(a, b)
        assert torch.equal(policy.act(obs, deterministic=True)[0], clone.act(obs, deterministic=True)[0])


def test_spec_contents():
    spec = make("box").spec
    assert spec == {"version": 2, "factory": "training.policy:MLPPolicy", "kwargs": {"hidden": [8, 8]}}


def test_init_starts_near_uniform():
    # 0.01-std policy head: logits near zero, so CleanRL's near-uniform initial policy
    with torch.no_grad():
        logits, _ = make("discrete")(obs_batch())
    assert logits.abs().max() < 0.5


def test_weights_are_numpy_and_set_weights_accepts_read_only():
    policy = make("box")
    weights = get_weights(policy)
    assert all(isinstance(v, np.ndarray) for v in weights.values())
    assert "policy.actor_logstd" in weights
    for v in weights.values():
        v.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        set_weights(make("box", seed=1), weights)
    weights.pop("policy.actor_logstd")
    with pytest.raises(RuntimeError):
        set_weights(policy, weights)


def test_unsupported_spaces_raise():
    with pytest.raises(TypeError):
        mlp_agent(gymnasium.spaces.Discrete(4), SPACES["discrete"])
    with pytest.raises(TypeError):
        mlp_agent(OBS, gymnasium.spaces.MultiBinary(3))
    with pytest.raises(ValueError):
        mlp_agent(OBS, gymnasium.spaces.Discrete(3, start=1))


def _ulps_apart(a: torch.Tensor, b: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """|a - b| in units in the last place of b (b's binade), computed in float64."""
    a, b = a.double(), b.double()
    _, exponent = torch.frexp(b)
    ulp = torch.ldexp(torch.ones_like(b), exponent - 1 - mantissa_bits)
    apart = (a - b).abs() / ulp
    return torch.where(b == 0, torch.where(a == 0, 0.0, float("inf")), apart).detach()


@pytest.mark.parametrize("dtype,mantissa_bits", [(torch.float32, 23), (torch.bfloat16, 7)])
def test_tanh_is_nn_tanh_within_one_ulp_with_the_same_backward(dtype, mantissa_bits):
    """The policy's Tanh runs NumPy's kernel on CPU (torch's does not vectorize in this build):
    values within one unit in the last place of nn.Tanh's, special values exactly, and the
    gradient is torch's own tanh backward of those values."""
    from training.fast_tanh import Tanh

    g = torch.Generator().manual_seed(0)
    specials = torch.tensor([0.0, -0.0, 20.0, -20.0, float("inf"), float("-inf"), 1e-30, -1e-30] * 8)
    x = torch.cat([torch.randn(4096, 64, generator=g) * 4, torch.randn(64, 64, generator=g) * 1e-4,
                   specials[None]]).to(dtype)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    ours = x.clone().requires_grad_()
    y = Tanh()(ours)
    assert "TanhViaNumPy" in type(y.grad_fn).__name__ and y.dtype == dtype
    ref = torch.nn.Tanh()(x)
    assert _ulps_apart(y, ref, mantissa_bits).max() <= 1
    assert torch.equal(y[-1], ref[-1]) and torch.equal(torch.signbit(y[-1]), torch.signbit(ref[-1]))
    assert torch.isnan(Tanh()(torch.tensor([float("nan")], dtype=dtype))).all()
    y.backward(grad)
    assert torch.equal(ours.grad, torch.ops.aten.tanh_backward(grad, y.detach()))


def test_tanh_of_a_value_does_not_depend_on_the_batch_around_it():
    """Sync mode's exactness: a runner (a batch of its envs) and the learner (minibatches of
    other shapes) must compute the same activations for the same observation."""
    from training.fast_tanh import Tanh

    x = torch.randn(1000, 37, generator=torch.Generator().manual_seed(2)) * 3
    whole = Tanh()(x)
    for i, k in ((0, 1), (1, 3), (500, 17), (983, 17)):
        assert torch.equal(Tanh()(x[i:i + k]), whole[i:i + k])
    assert torch.equal(Tanh()(x.t()).t(), whole)  # a non-contiguous input


def test_policy_under_bfloat16_autocast_matches_nn_tanh_policy():
    """A whole actor-critic step under autocast: same outputs and parameter gradients as the same
    weights with torch's own nn.Tanh (NumPy's float32 tanh may be one ulp off torch's, which the
    rounding to bfloat16 absorbs here: none of these 35,840 outputs differs)."""
    from training.fast_tanh import Tanh
    from training.ppo import forward_float32

    obs_space = gymnasium.spaces.Box(-1.0, 1.0, (260,), np.float32)
    ours = mlp_agent(obs_space, gymnasium.spaces.Discrete(69), hidden=(64, 64))
    ref = build_agent(ours.spec, EnvInfo(obs_space, gymnasium.spaces.Discrete(69)))
    ref.load_state_dict(ours.state_dict())
    swapped = 0
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, Tanh):
                setattr(module, name, torch.nn.Tanh())
                swapped += 1
    assert swapped == 4
    x = torch.randn(512, 260, generator=torch.Generator().manual_seed(1))
    for policy in (ours, ref):
        params, value = forward_float32(policy, x, torch.bfloat16)
        (params.logsumexp(-1).sum() + value.sum()).backward()
        policy.out = (params, value)
    assert torch.equal(ours.out[0], ref.out[0]) and torch.equal(ours.out[1], ref.out[1])
    for (name, a), (_, b) in zip(ours.named_parameters(), ref.named_parameters()):
        assert torch.equal(a.grad, b.grad), name

"""The policy plug-in convention (training/agent.py): any module following PufferLib's
``forward_eval(observations, state) -> (logits, values)``, its logits forms per action space, the
spec a checkpoint records, and the behaviour prior as a generic logit bonus."""

import gymnasium
import numpy as np
import pufferlib.models
import pytest
import torch
from torch import nn
from torch.distributions import Categorical, Normal

from training.agent import Agent, build_agent, make_spec, mlp_agent
from training.config import config_from_args
from training.envs.env_info import EnvInfo

OBS = gymnasium.spaces.Box(-1.0, 1.0, (4,), np.float32)
B = 6


def obs(seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (B, 4)).astype(np.float32))


class ListLogits(nn.Module):
    """PufferLib's MultiDiscrete form: one logits tensor per action dimension; values (B, 1)."""

    def __init__(self, env):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(4, int(n)) for n in env.single_action_space.nvec)
        self.value = nn.Linear(4, 1)

    def forward_eval(self, observations, state=None):
        return [h(observations) for h in self.heads], self.value(observations)

    def forward(self, observations, state=None):
        return self.forward_eval(observations, state)


class NormalLogits(nn.Module):
    """PufferLib's Box form: a torch.distributions.Normal."""

    def __init__(self, env):
        super().__init__()
        self.mean = nn.Linear(4, 2)
        self.logstd = nn.Parameter(torch.tensor([[-0.5, 0.2]]))
        self.value = nn.Linear(4, 1)

    def forward_eval(self, observations, state=None):
        mean = self.mean(observations)
        return Normal(mean, self.logstd.exp().expand_as(mean)), self.value(observations)

    def forward(self, observations, state=None):
        return self.forward_eval(observations, state)


def test_pufferlib_default_policy_acts_and_scores_as_a_categorical():
    spec = {"version": 2, "factory": "pufferlib.models:Default", "kwargs": {"hidden_size": 16}}
    torch.manual_seed(0)
    agent = build_agent(spec, EnvInfo(OBS, gymnasium.spaces.Discrete(3)))
    assert isinstance(agent.policy, pufferlib.models.Default)
    action, logprob, value = agent.act(obs(), generator=torch.Generator().manual_seed(0))
    assert action.shape == logprob.shape == value.shape == (B,)  # values (B, 1) become (B,)
    logits, _ = agent.policy.forward_eval(obs())
    torch.testing.assert_close(logprob, Categorical(logits=logits).log_prob(action))
    lp, entropy, v = agent.evaluate(obs(), action)
    torch.testing.assert_close(lp, logprob)
    torch.testing.assert_close(entropy, Categorical(logits=logits).entropy())


def test_list_logits_of_a_multidiscrete_policy_score_as_independent_parts():
    space = gymnasium.spaces.MultiDiscrete([3, 2])
    agent = Agent(ListLogits(EnvInfo(OBS, space)), space, spec={})
    action, logprob, value = agent.act(obs(), generator=torch.Generator().manual_seed(1))
    assert action.shape == (B, 2) and value.shape == (B,)
    parts, _ = agent.policy.forward_eval(obs())
    expected = sum(Categorical(logits=lg).log_prob(action[:, i]) for i, lg in enumerate(parts))
    torch.testing.assert_close(logprob, expected)


def test_a_normal_from_the_policy_scores_as_itself():
    space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
    agent = Agent(NormalLogits(EnvInfo(OBS, space)), space, spec={})
    action = torch.randn(B, 2)
    logprob, entropy, _ = agent.evaluate(obs(), action)
    dist, _ = agent.policy.forward_eval(obs())
    torch.testing.assert_close(logprob, dist.log_prob(action).sum(-1))
    torch.testing.assert_close(entropy, dist.entropy().sum(-1))
    assert torch.equal(agent.act(obs(), deterministic=True)[0], dist.loc)


def test_acting_without_values_uses_forward_actor_when_the_policy_has_it(monkeypatch):
    agent = mlp_agent(OBS, gymnasium.spaces.Discrete(3), hidden=(8,))
    monkeypatch.setattr(agent.policy, "forward_eval", lambda *a: pytest.fail("the critic ran"))
    action, _, value = agent.act(obs(), with_value=False)
    assert action.shape == (B,) and torch.equal(value, torch.zeros(B))


def test_the_prior_adds_its_logit_to_the_behaviours_action():
    space = gymnasium.spaces.Discrete(3)
    torch.manual_seed(0)
    plain = mlp_agent(OBS, space, hidden=(8,))
    residual = Agent(plain.policy, space, spec={}, prior=lambda o: (o[:, 0] > 0).astype(np.int64), prior_logit=2.5)
    x = obs(3)
    with torch.no_grad():
        diff = residual(x)[0] - plain(x)[0]
    expected = torch.zeros(B, 3)
    expected[torch.arange(B), (x[:, 0] > 0).long()] = 2.5
    torch.testing.assert_close(diff, expected)
    assert torch.equal(residual.prior_actions(x), (x[:, 0] > 0).long())
    with pytest.raises(TypeError, match="Discrete"):  # a logit bonus needs logits
        Agent(plain.policy, gymnasium.spaces.Box(-1, 1, (3,)), spec={}, prior=lambda o: o)


def test_spec_names_the_factory_and_fills_hidden_only_where_the_factory_takes_it():
    base = {"env": "gym:CartPole-v1", "policy_hidden": "32,16"}
    assert make_spec(config_from_args(base)) == {
        "version": 2, "factory": "training.policy:default_policy", "kwargs": {"hidden": [32, 16]}}
    spec = make_spec(config_from_args({**base, "policy": "pufferlib.models:Default",
                                       "policy_kwargs": '{"hidden_size": 8}'}))
    assert spec["kwargs"] == {"hidden_size": 8}  # Default has no `hidden`
    given = make_spec(config_from_args({**base, "policy_kwargs": '{"hidden": [4]}'}))
    assert given["kwargs"] == {"hidden": [4]}  # --policy-kwargs wins over --policy-hidden
    prior = make_spec(config_from_args({**base, "policy_prior": "prospector_game.bots:hold_bot"}))
    assert prior["prior"] == "prospector_game.bots:hold_bot" and prior["prior_logit"] == 5.0


def test_a_factory_must_build_a_module_with_forward_eval():
    with pytest.raises(TypeError, match="forward_eval"):
        build_agent({"version": 2, "factory": "torch.nn:Identity", "kwargs": {}}, EnvInfo(OBS, gymnasium.spaces.Discrete(2)))
    with pytest.raises(ValueError, match="version"):
        build_agent({"version": 1, "hidden": [8]}, EnvInfo(OBS, gymnasium.spaces.Discrete(2)))

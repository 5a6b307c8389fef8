"""The game's policies (prospector_game/policies.py): the action mask against the env's own
validity rules, the masked distribution, the spec that rebuilds them, and the game's bots as
residual priors through the trainer's generic prior."""

import json

import gymnasium
import numpy as np
import pytest
import torch

from prospector_game.bots import BOTS
from prospector_game.consts import A_CASH_OUT, A_FUEL_L, A_JETTISON0, A_SELECT0, A_SELL0, A_WIDE, N_ACTIONS
from prospector_game.env import ProspectorEnv
from prospector_game.policies import MASKED_LOGIT, ActionMask
from training.agent import build_agent, get_weights, make_spec, set_weights
from training.config import ConfigError, config_from_args
from training.envs.env_info import EnvInfo
from training.ppo import ppo_update


def action_mask(x, rules):
    return ActionMask(rules)(x)


def _visited_states(rules="v2", n=256, steps=300, seed=0):
    """(obs, action, env said invalid) for uniformly random actions over every action id, on steps
    that did not end an episode (the auto-reset clears the env's invalid flag)."""
    env = ProspectorEnv(num_envs=n, seed=seed, rules=rules)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        a = rng.integers(0, N_ACTIONS, n)
        before = obs.copy()
        obs, _, term, trunc, _ = env.step(a)
        live = ~(term | trunc)
        out.append((before[live], a[live], env.sim.last_invalid[live]))
    return [np.concatenate(x) for x in zip(*out)]


@pytest.mark.parametrize("rules", ["v1", "v2"])
def test_mask_allows_only_valid_actions_and_blocks_every_invalid_one(rules):
    obs, a, invalid = _visited_states(rules)
    allowed = action_mask(torch.from_numpy(obs), rules).numpy()[np.arange(len(a)), a]
    assert invalid.sum() > 1000 and allowed.sum() > 1000  # both sides are exercised
    # every action the policy may take is valid by the rules...
    assert not (allowed & invalid).any(), np.unique(a[allowed & invalid])
    # ...and what it may not take is invalid, or a no-op: selling/jettisoning an empty commodity,
    # a wide scan at the station
    blocked_valid = ~allowed & ~invalid
    noop = ((a >= A_SELL0) & (a < A_SELL0 + 18)) | ((a >= A_JETTISON0) & (a < A_JETTISON0 + 6)) | (a == A_WIDE)
    assert not (blocked_valid & ~noop).any(), np.unique(a[blocked_valid & ~noop])
    c = np.where(a >= A_SELL0, (a - A_SELL0) // 3, a - A_JETTISON0)
    assert (obs[blocked_valid & (a != A_WIDE), 8 + c[blocked_valid & (a != A_WIDE)]] == 0).all()


def test_mask_by_hand_at_the_station_and_in_the_field():
    env = ProspectorEnv(num_envs=1, seed=3)
    obs, _ = env.reset(seed=3)
    m = action_mask(torch.from_numpy(obs), "v2")[0].numpy()
    assert obs[0, 17] == 1.0  # episodes start at the station
    assert m[A_CASH_OUT] and not m[A_SELECT0:A_SELECT0 + 16].any() and not m[28:31].any()
    assert m[A_FUEL_L] == (obs[0, 7] >= np.log1p(210.01) / np.log1p(1e7))
    assert not m[A_SELL0:A_SELL0 + 18].any()  # empty hold
    field = obs.copy()
    field[0, 17] = 0.0
    m = action_mask(torch.from_numpy(field), "v2")[0].numpy()
    assert not m[A_CASH_OUT] and not m[A_FUEL_L] and m[A_WIDE]
    assert action_mask(torch.from_numpy(field), "v1")[0, A_CASH_OUT]  # v1 cashes out anywhere


def _spec(slots=True, prior=None, prior_logit=0.0):
    kwargs = {"hidden": [32, 32], "rules": "v2", **({"slot_dim": 8} if slots else {})}
    spec = {"version": 2, "factory": f"prospector_game.policies:{'slots' if slots else 'masked_mlp'}", "kwargs": kwargs}
    if prior:
        spec.update(prior=f"prospector_game.bots:{prior}", prior_logit=prior_logit)
    return spec


def _policy(slots=True, prior=None, prior_logit=0.0):
    env = ProspectorEnv(num_envs=1)
    torch.manual_seed(0)
    return build_agent(_spec(slots, prior, prior_logit), EnvInfo.of(env))


@pytest.mark.parametrize("slots", [True, False], ids=["slots", "masked_mlp"])
def test_masked_actions_have_zero_probability_and_are_never_sampled(slots):
    policy = _policy(slots)
    obs, a, _ = _visited_states(n=64, steps=20)
    x = torch.from_numpy(obs)
    mask = action_mask(x, "v2")
    logits, _ = policy(x)
    assert (logits[~mask] == MASKED_LOGIT).all() and (logits[mask] > MASKED_LOGIT / 2).all()
    action, logprob, _ = policy.act(x, generator=torch.Generator().manual_seed(0))
    assert mask[torch.arange(len(x)), action].all() and torch.isfinite(logprob).all()
    _, entropy, _ = policy.evaluate(x, action)
    assert torch.isfinite(entropy).all()
    assert torch.allclose(entropy, torch.log(mask.sum(-1).float()), atol=0.05)  # near-uniform over allowed


@pytest.mark.parametrize("prior", [None, "cautious_scanner"])
@pytest.mark.parametrize("slots", [True, False], ids=["slots", "masked_mlp"])
def test_spec_is_json_and_rebuilds_the_same_policy(slots, prior):
    policy = _policy(slots, prior, 5.0)
    spec = json.loads(json.dumps(policy.spec))
    assert spec.get("prior") == (f"prospector_game.bots:{prior}" if prior else None)
    assert hasattr(policy.policy.actor, "slot") is slots  # the slot encoder only in the slot actor
    clone = build_agent(spec, EnvInfo.of(ProspectorEnv(num_envs=1)))
    set_weights(clone, get_weights(policy))
    obs, _, _ = _visited_states(n=16, steps=5)
    x = torch.from_numpy(obs)
    assert torch.equal(policy(x)[0], clone(x)[0])


def test_policies_need_the_prospector_spaces():
    env = EnvInfo(gymnasium.spaces.Box(-1, 1, (4,)), gymnasium.spaces.Discrete(2))
    for slots in (True, False):
        with pytest.raises(ValueError, match="prospector's policies"):
            build_agent(_spec(slots), env)


def test_the_games_policies_are_offered_by_the_plugin_with_the_rules():
    cfg = config_from_args({"env": "prospector"})
    assert cfg.policy == "masked_mlp" and cfg.policy_kwargs == {"rules": "v2"}  # the preset's, given the rules
    assert config_from_args({"env": "prospector", "env_rules": "v1", "policy": "slots"}).policy_kwargs == {"rules": "v1"}
    assert make_spec(cfg)["factory"] == "prospector_game.policies:masked_mlp"
    assert config_from_args({"env": "gym:CartPole-v1"}).policy == "default"
    for name in ("slots", "masked_mlp"):  # names only the game's plug-in offers
        with pytest.raises(ConfigError, match="--policy"):
            config_from_args({"env": "gym:CartPole-v1", "policy": name})


def test_distillation_skips_teacher_actions_the_mask_rules_out():
    policy = _policy()
    obs, a, _ = _visited_states(n=32, steps=8)
    x = torch.from_numpy(obs)
    mask = action_mask(x, "v2")
    teacher = torch.where(mask[:, A_CASH_OUT], A_CASH_OUT, A_FUEL_L)  # often masked in the field
    assert (~mask[torch.arange(len(x)), teacher]).any()
    action, logprob, value = policy.act(x, generator=torch.Generator().manual_seed(0))
    n = len(x)
    batch = {"obs": x, "actions": action, "logprobs": logprob, "values": value,
             "advantages": torch.zeros(n), "returns": torch.zeros(n), "valid": torch.ones(n, dtype=torch.bool),
             "teacher_actions": teacher}
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    stats = ppo_update(policy, opt, batch, update_epochs=1, num_minibatches=1, clip_coef=0.2, vf_clip_coef=0.0,
                       ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5, distill_coef=1.0,
                       generator=np.random.default_rng(0))
    # near-uniform start: -log(1/allowed) <= log(69) over the reachable teacher actions only
    assert np.isfinite(stats["distill_loss"]) and 0 < stats["distill_loss"] < np.log(N_ACTIONS)


@pytest.mark.parametrize("bot", ["cautious_scanner", "greedy_miner"])
@pytest.mark.parametrize("slots", [True, False], ids=["slots", "masked_mlp"])
def test_prior_adds_its_logit_to_the_bots_action_only(slots, bot):
    obs, _, _ = _visited_states(n=64, steps=20)
    x = torch.from_numpy(obs)
    plain, residual = _policy(slots), _policy(slots, bot, 3.5)  # the same seed: the same weights
    a, b = get_weights(plain), get_weights(residual)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)  # the prior adds no weights
    mask = action_mask(x, "v2")
    with torch.no_grad():
        diff = torch.where(mask, residual(x)[0] - plain(x)[0], 0.0)
    expected = np.zeros(diff.shape, np.float32)
    bot_actions = BOTS[bot](obs)
    expected[np.arange(len(obs)), bot_actions] = 3.5
    expected[~mask.numpy()] = 0.0
    assert (expected == 3.5).sum() > 0.9 * len(obs)  # the bots act almost always within the mask
    assert np.allclose(diff.numpy(), expected, atol=1e-5)


def test_an_untrained_residual_policy_plays_the_bot_at_argmax():
    obs, _, _ = _visited_states(n=64, steps=20)
    action, _, _ = _policy(False, "cautious_scanner", 5.0).act(torch.from_numpy(obs), deterministic=True)
    same = action.numpy() == BOTS["cautious_scanner"](obs)
    assert same.mean() > 0.9, same.mean()


def test_policy_prior_flags_are_checked():
    assert config_from_args({"env": "prospector", "policy_prior": "greedy_miner"}).policy_prior == "greedy_miner"
    assert config_from_args({"env": "prospector", "policy_prior": "none"}).policy_prior is None
    assert make_spec(config_from_args({"env": "prospector"}))["prior"] == "prospector_game.bots:cautious_scanner"
    v1 = config_from_args({"env": "prospector", "env_rules": "v1", "policy_prior": "prospector_game.bots:market_timer_v1"})
    assert make_spec(v1)["prior"] == "prospector_game.bots:market_timer_v1"
    bad = [({"env": "prospector", "policy_prior": "no_such_bot"}, "--policy-prior"),
           ({"env": "prospector", "policy_prior": "no_such_module:bot"}, "--policy-prior"),
           ({"env": "gym:CartPole-v1", "policy_prior": "greedy_miner"}, "--policy-prior"),
           ({"env": "prospector", "policy_prior_logit": 0.0}, "--policy-prior-logit"),
           ({"env": "prospector", "policy_prior_logit": float("nan")}, "--policy-prior-logit")]
    for values, name in bad:
        with pytest.raises(ConfigError) as e:
            config_from_args(values)
        assert e.value.flag == name, values


def test_prior_actions_computed_once_per_batch_act_as_the_policy_own():
    obs, _, _ = _visited_states(n=64, steps=20)
    x = torch.from_numpy(obs)
    policy = _policy(False, "cautious_scanner", 5.0)
    prior = policy.prior_actions(x)
    assert torch.equal(prior, torch.from_numpy(BOTS["cautious_scanner"](obs)))
    assert _policy(False).prior_actions(x) is None
    with torch.no_grad():
        assert torch.equal(policy(x, prior)[0], policy(x)[0])
        assert not torch.equal(policy(x, torch.full_like(prior, A_WIDE))[0], policy(x)[0])  # it is what is used

    def update(prior_actions):  # one PPO step from the same weights on the same batch
        p = _policy(False, "cautious_scanner", 5.0)
        with torch.no_grad():
            action, logprob, value = p.act(x, generator=torch.Generator().manual_seed(0))
        n = len(x)
        batch = {"obs": x, "actions": action, "logprobs": logprob, "values": value,
                 "advantages": torch.linspace(-1, 1, n), "returns": torch.zeros(n), "valid": torch.ones(n)}
        if prior_actions is not None:
            batch["prior_actions"] = prior_actions
        ppo_update(p, torch.optim.Adam(p.parameters(), lr=1e-3), batch, update_epochs=2, num_minibatches=2,
                   clip_coef=0.2, vf_clip_coef=0.0, ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5,
                   generator=np.random.default_rng(0))
        return get_weights(p)

    computed, given, wrong = update(None), update(prior), update(torch.full_like(prior, A_WIDE))
    assert all(np.array_equal(computed[k], given[k]) for k in computed)
    assert not all(np.array_equal(computed[k], wrong[k]) for k in computed)

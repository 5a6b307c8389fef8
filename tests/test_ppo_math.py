"""PPO math checked against hand-computed numbers and a plain-Python reference."""

import math

import gymnasium
import numpy as np
import pytest
import torch

from training.agent import mlp_agent
from training.advantages import compute_gae, compute_vtrace
from training.ppo import explained_variance, linear_lr, minibatch_indices, ppo_losses, ppo_update

G, L = 0.9, 0.8  # gamma, lambda for hand examples: gamma*lambda = 0.72


def col(*xs):
    """One env as a (T, 1) float32 column."""
    return np.array(xs, dtype=np.float32)[:, None]


def gae1(rewards, values, last, term=None, trunc=None, valid=None, boot=None, ratios=None, **kw):
    T = len(rewards)
    term = col(*(term or [0] * T)).astype(bool)
    trunc = col(*(trunc or [0] * T)).astype(bool)
    valid = col(*(valid or [1] * T)).astype(bool)
    boot = col(*(boot or [0] * T))
    args = (col(*rewards), col(*values), term, trunc, valid, boot, np.array([last], np.float32))
    if ratios is None:
        adv, ret = compute_gae(*args, G, L)
    else:
        adv, ret = compute_vtrace(*args, col(*ratios), G, L, **kw)
    return adv[:, 0], ret[:, 0]


# ---------------------------------------------------------------- GAE

def test_gae_no_dones_hand_computed():
    adv, ret = gae1([1, 2, 3], [0.5, 1.0, 1.5], last=2.0)
    # t2: 3 + .9*2 - 1.5 = 3.3; t1: 2 + .9*1.5 - 1 + .72*3.3 = 4.726; t0: 1.4 + .72*4.726
    np.testing.assert_allclose(adv, [4.80272, 4.726, 3.3], rtol=1e-6)
    np.testing.assert_allclose(ret, [5.30272, 5.726, 4.8], rtol=1e-6)
    assert adv.dtype == np.float32 and ret.dtype == np.float32


def test_gae_terminal_in_middle_does_not_bootstrap_or_carry():
    adv, _ = gae1([1, 2, 3], [0.5, 1.0, 1.5], last=2.0, term=[0, 1, 0], boot=[0, 99, 0])
    # t1 terminal: nv = 0 (bootstrap ignored), carry cut: 2 - 1 = 1; t0: 1.4 + .72*1
    np.testing.assert_allclose(adv, [2.12, 1.0, 3.3], rtol=1e-6)


def test_gae_truncation_bootstraps_and_cuts_carry():
    adv, _ = gae1([1, 2, 3], [0.5, 1.0, 1.5], last=2.0, trunc=[0, 1, 0], boot=[0, 4.0, 0])
    # t1: 2 + .9*4 - 1 = 4.6 with no carry from t2; t0: 1.4 + .72*4.6
    np.testing.assert_allclose(adv, [4.712, 4.6, 3.3], rtol=1e-6)


def test_gae_invalid_dummy_step_after_done_contributes_nothing():
    # t2 is the Serial backend's reset step: junk reward/value, marked invalid.
    adv, ret = gae1([1, 2, 50, 3], [0.5, 1.0, 7.0, 1.5], last=2.0,
                    term=[0, 1, 0, 0], valid=[1, 1, 0, 1])
    np.testing.assert_allclose(adv, [2.12, 1.0, 0.0, 3.3], rtol=1e-6)
    assert ret[2] == pytest.approx(7.0)  # returns = adv + values even where invalid
    adv_valid, _ = gae1([1, 2, 50, 3], [0.5, 1.0, 7.0, 1.5], last=2.0, term=[0, 1, 0, 0])
    assert adv_valid[2] != 0.0  # the mask, not the data, zeroed it


def test_gae_invalid_step_without_done_stops_carry():
    adv, _ = gae1([1, 2, 3], [0.5, 1.0, 1.5], last=2.0, valid=[1, 0, 1])
    # t0 keeps its one-step TD error (1 + .9*1 - .5) but gets no carry through t1
    np.testing.assert_allclose(adv, [1.4, 0.0, 3.3], rtol=1e-6)


def reference_gae(r, v, term, trunc, valid, boot, last, gamma, lam, ratios=None, rho_clip=1.0, c_clip=1.0):
    T, N = r.shape
    adv = np.zeros((T, N))
    for n in range(N):
        carry = 0.0
        for t in reversed(range(T)):
            if term[t, n]:
                nv, carry = 0.0, 0.0
            elif trunc[t, n]:
                nv, carry = boot[t, n], 0.0
            else:
                nv = last[n] if t == T - 1 else v[t + 1, n]
            rho = 1.0 if ratios is None else min(ratios[t, n], rho_clip)
            c = 1.0 if ratios is None else min(ratios[t, n], c_clip)
            a = rho * (r[t, n] + gamma * nv - v[t, n]) + gamma * lam * c * carry
            adv[t, n] = a if valid[t, n] else 0.0
            carry = adv[t, n]
    return adv, adv + v


def random_rollout(rng, T=16, N=5):
    return dict(rewards=rng.normal(size=(T, N)).astype(np.float32),
                values=rng.normal(size=(T, N)).astype(np.float32),
                terminals=rng.random((T, N)) < 0.1, truncations=rng.random((T, N)) < 0.1,
                valid=rng.random((T, N)) > 0.1,
                bootstrap_values=rng.normal(size=(T, N)).astype(np.float32),
                last_values=rng.normal(size=N).astype(np.float32))


def test_gae_matches_reference_loop_on_random_data():
    d = random_rollout(np.random.default_rng(0))
    adv, ret = compute_gae(**d, gamma=0.99, gae_lambda=0.95)
    ref_adv, ref_ret = reference_gae(*d.values(), 0.99, 0.95)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-5, atol=1e-5)


def test_gae_many_envs_equal_per_env_results():
    d = random_rollout(np.random.default_rng(1))
    adv, ret = compute_gae(**d, gamma=0.99, gae_lambda=0.95)
    for n in range(adv.shape[1]):
        one = {k: (v[n:n + 1] if k == "last_values" else v[:, n:n + 1]) for k, v in d.items()}
        a1, r1 = compute_gae(**one, gamma=0.99, gae_lambda=0.95)
        np.testing.assert_allclose(adv[:, n:n + 1], a1, rtol=1e-6)
        np.testing.assert_allclose(ret[:, n:n + 1], r1, rtol=1e-6)


def test_gae_rejects_mismatched_shapes():
    d = random_rollout(np.random.default_rng(2))
    d["rewards"] = d["rewards"][:-1]
    with pytest.raises(ValueError, match="rewards"):
        compute_gae(**d, gamma=0.99, gae_lambda=0.95)


# ---------------------------------------------------------------- V-trace

def test_vtrace_with_unit_ratios_equals_gae():
    d = random_rollout(np.random.default_rng(3))
    gae = compute_gae(**d, gamma=0.99, gae_lambda=0.95)
    ones = np.ones_like(d["rewards"])
    for clip in (1.0, 2.0):
        vt = compute_vtrace(**d, ratios=ones, gamma=0.99, gae_lambda=0.95, rho_clip=clip, c_clip=clip)
        np.testing.assert_allclose(vt[0], gae[0], rtol=1e-6)
        np.testing.assert_allclose(vt[1], gae[1], rtol=1e-6)


def test_vtrace_hand_computed_with_clipping():
    # deltas: t1 = 2 + .9*2 - 1 = 2.8, t0 = 1 + .9*1 - .5 = 1.4; ratios [2, 0.5]
    adv, _ = gae1([1, 2], [0.5, 1.0], last=2.0, ratios=[2.0, 0.5])
    # t1: rho = .5 -> 1.4; t0: rho = c = min(2, 1) = 1 -> 1.4 + .72*1.4
    np.testing.assert_allclose(adv, [2.408, 1.4], rtol=1e-6)
    adv, _ = gae1([1, 2], [0.5, 1.0], last=2.0, ratios=[2.0, 0.5], rho_clip=1.5, c_clip=0.9)
    # t0: rho = 1.5, c = 0.9 -> 1.5*1.4 + .72*.9*1.4
    np.testing.assert_allclose(adv, [3.0072, 1.4], rtol=1e-6)


def test_vtrace_matches_reference_loop_on_random_data():
    rng = np.random.default_rng(4)
    d = random_rollout(rng)
    ratios = rng.uniform(0.3, 2.0, size=d["rewards"].shape).astype(np.float32)
    adv, ret = compute_vtrace(**d, ratios=ratios, gamma=0.99, gae_lambda=0.95, rho_clip=1.2, c_clip=0.8)
    ref_adv, ref_ret = reference_gae(*d.values(), 0.99, 0.95, ratios, 1.2, 0.8)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)


def test_vtrace_matches_pufferlib_kernel():
    pytest.importorskip("pufferlib._C")
    rng = np.random.default_rng(5)
    T, N = 12, 4
    d = random_rollout(rng, T, N)
    d["truncations"][:] = False  # PufferLib's kernel has only one kind of done
    d["valid"][:] = True
    ratios = rng.uniform(0.3, 2.0, size=(T, N)).astype(np.float32)
    adv, _ = compute_vtrace(**d, ratios=ratios, gamma=0.99, gae_lambda=0.95, rho_clip=1.2, c_clip=0.8)
    # PufferLib layout: (env, time+1), reward/done of action t stored at t+1.
    def shifted(x):
        out = np.zeros((N, T + 1), np.float32)
        out[:, 1:] = x.T
        return torch.from_numpy(out)
    values = torch.from_numpy(np.concatenate([d["values"], d["last_values"][None]]).T.copy())
    importance = torch.from_numpy(np.concatenate([ratios, np.ones((1, N), np.float32)]).T.copy())
    out = torch.zeros(N, T + 1)
    torch.ops.pufferlib.compute_puff_advantage(values, shifted(d["rewards"]),
                                               shifted(d["terminals"].astype(np.float32)),
                                               importance, out, 0.99, 0.95, 1.2, 0.8)
    np.testing.assert_allclose(adv, out[:, :T].numpy().T, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- losses

def loss_inputs(extra=None):
    ratios = [1.5, 0.5, 1.1, 1.5]
    d = dict(new_logprob=torch.log(torch.tensor(ratios)) - 1.0, old_logprob=torch.full((4,), -1.0),
             entropy=torch.tensor([0.1, 0.2, 0.3, 0.4]), new_value=torch.tensor([1.0, 2.0, 0.0, 3.0]),
             old_value=torch.tensor([0.5, 2.0, 0.0, 1.0]), advantages=torch.tensor([1.0, -1.0, -1.0, -2.0]),
             returns=torch.tensor([2.0, 1.0, 0.0, 3.0]), weights=torch.ones(4))
    if extra is not None:  # append one more entry
        d = {k: torch.cat([v, torch.tensor([extra[k]])]) for k, v in d.items()}
    return d


def test_losses_hand_computed():
    out = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=False)
    # -A*r vs -A*clip(r): e0 upper clip -1.2, e1 lower clip 0.8, e2 1.1, e3 pessimistic unclipped 3.0
    assert out["policy_loss"].item() == pytest.approx((-1.2 + 0.8 + 1.1 + 3.0) / 4, rel=1e-6)
    # max(unclipped, clipped) squared errors: 1.69, 1, 0, 3.24
    assert out["value_loss"].item() == pytest.approx(0.5 * (1.69 + 1 + 0 + 3.24) / 4, rel=1e-6)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1, 1.5)]
    assert out["approx_kl"].item() == pytest.approx(sum(kl) / 4, rel=1e-5)
    assert out["clipfrac"].item() == pytest.approx(0.75)
    assert out["entropy"].item() == pytest.approx(0.25)
    unclipped = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.0, norm_adv=False)
    assert unclipped["value_loss"].item() == pytest.approx(0.5 * (1 + 1 + 0 + 0) / 4)


def test_importance_weights_scale_each_rows_clipped_policy_term():
    """The decoupled objective (overlapped mode): each row's min(r A, clip(r) A) term is scaled by
    its weight pi_prox / mu; the value loss, entropy and the ratio diagnostics are not."""
    w = torch.tensor([0.5, 1.0, 0.25, 2.0])
    out = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=False, is_weights=w)
    plain = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=False)
    # the per-row terms of test_losses_hand_computed: -1.2, 0.8, 1.1, 3.0
    assert out["policy_loss"].item() == pytest.approx((0.5 * -1.2 + 0.8 + 0.25 * 1.1 + 2.0 * 3.0) / 4, rel=1e-6)
    for key in ("value_loss", "entropy", "approx_kl", "clipfrac"):
        assert out[key].item() == plain[key].item(), key


def test_losses_normalise_advantages_per_minibatch():
    d = dict(new_logprob=torch.log(torch.tensor([1.0, 1.0, 1.0, 1.1])), old_logprob=torch.zeros(4),
             entropy=torch.zeros(4), new_value=torch.zeros(4), old_value=torch.zeros(4),
             advantages=torch.tensor([1.0, 2.0, 3.0, 4.0]), returns=torch.zeros(4), weights=torch.ones(4))
    out = ppo_losses(**d, clip_coef=0.2, vf_clip_coef=0.2)
    # mean 2.5, unbiased std sqrt(5/3): normalised a3 = 1.5/1.290994; loss = -mean(a_n * r)
    a_n = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / math.sqrt(5 / 3)
    assert out["policy_loss"].item() == pytest.approx(-(a_n[3].item() * 0.1) / 4, rel=1e-5)
    d["advantages"] = d["advantages"] * 3.0 + 5.0  # affine change is normalised away
    assert ppo_losses(**d, clip_coef=0.2, vf_clip_coef=0.2)["policy_loss"].item() == \
        pytest.approx(out["policy_loss"].item(), rel=1e-5)


@pytest.mark.parametrize("norm_adv", [False, True])
def test_losses_ignore_invalid_entries(norm_adv):
    base = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=norm_adv)
    junk = dict(new_logprob=2.0, old_logprob=-3.0, entropy=9.0, new_value=50.0, old_value=-50.0,
                advantages=100.0, returns=-70.0, weights=0.0)
    d = loss_inputs(junk)
    d["new_logprob"].requires_grad_(True)
    masked = ppo_losses(**d, clip_coef=0.2, vf_clip_coef=0.2, norm_adv=norm_adv)
    for k in base:
        assert masked[k].item() == pytest.approx(base[k].item(), rel=1e-5, abs=1e-7), k
    masked["policy_loss"].backward()
    assert d["new_logprob"].grad[4] == 0.0
    d["weights"][4] = 1.0  # the same entry counted as valid does change things
    assert ppo_losses(**d, clip_coef=0.2, vf_clip_coef=0.2, norm_adv=norm_adv)["value_loss"].item() \
        != pytest.approx(base["value_loss"].item())


def test_pg_weights_limit_the_policy_terms_and_leave_the_value_loss_on_every_valid_entry():
    """Roll-ins: an entry the teacher played (pg weight 0) still trains the critic, but adds
    nothing to the policy loss, entropy, KL or clip fraction. Hand-computed on loss_inputs with
    entry 3 the teacher's."""
    pg = torch.tensor([1.0, 1.0, 1.0, 0.0])
    out = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=False, pg_weights=pg)
    assert out["policy_loss"].item() == pytest.approx((-1.2 + 0.8 + 1.1) / 3, rel=1e-6)
    assert out["value_loss"].item() == pytest.approx(0.5 * (1.69 + 1 + 0 + 3.24) / 4, rel=1e-6)
    assert out["entropy"].item() == pytest.approx(0.2, rel=1e-6)
    kl = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.1)]
    assert out["approx_kl"].item() == pytest.approx(sum(kl) / 3, rel=1e-5)
    assert out["clipfrac"].item() == pytest.approx(2 / 3)
    normed = ppo_losses(**loss_inputs(), clip_coef=0.2, vf_clip_coef=0.2, norm_adv=True, pg_weights=pg)
    # advantages (1, -1, -1) normalised over the policy's entries only: mean -1/3, unbiased std sqrt(4/3)
    a_n = [(a + 1 / 3) / math.sqrt(4 / 3) for a in (1.0, -1.0, -1.0)]
    expected = [max(-a * r, -a * min(max(r, 0.8), 1.2)) for a, r in zip(a_n, (1.5, 0.5, 1.1))]
    assert normed["policy_loss"].item() == pytest.approx(sum(expected) / 3, rel=1e-5)


def test_explained_variance():
    # Var[R] = 14/9, Var[R - V] = 2/9 -> 1 - 1/7; the invalid 4th entry is ignored
    ev = explained_variance(torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 2.0, 4.0, -5.0]),
                            torch.tensor([1.0, 1.0, 1.0, 0.0]))
    assert ev == pytest.approx(6 / 7)
    assert math.isnan(explained_variance(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 3.0])))


# ---------------------------------------------------------------- minibatches, lr

def test_minibatch_indices_cover_each_index_once():
    rng = np.random.default_rng(0)
    mbs = minibatch_indices(12, 3, rng)
    assert [len(m) for m in mbs] == [4, 4, 4]
    assert sorted(np.concatenate(mbs).tolist()) == list(range(12))
    again = np.concatenate(minibatch_indices(12, 3, rng))
    assert not np.array_equal(np.concatenate(mbs), again)  # fresh permutation per call


def test_minibatch_indices_errors_and_uneven_last_rounds():
    rng = np.random.default_rng(0)
    uneven = minibatch_indices(10, 3, rng)  # a shortened last round: parts differ by one row at most
    assert [len(m) for m in uneven] == [4, 3, 3] and sorted(np.concatenate(uneven).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="empty"):
        minibatch_indices(2, 4, rng)
    with pytest.raises(ValueError, match="empty"):
        minibatch_indices(0, 1, rng)


def test_linear_lr():
    assert linear_lr(1e-3, 0, 10) == pytest.approx(1e-3)
    assert linear_lr(1e-3, 5, 10) == pytest.approx(5e-4)
    assert linear_lr(1e-3, 9, 10) == pytest.approx(1e-4)
    assert linear_lr(1e-3, 12, 10) == 0.0
    assert linear_lr(1e-3, 5, 10, anneal=False) == 1e-3


# ---------------------------------------------------------------- ppo_update

OBS = gymnasium.spaces.Box(-1, 1, (3,), np.float32)


def make_batch(policy, B=64, adv_scale=1.0, ret_offset=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, 3, generator=g) * 2 - 1
    actions = torch.randint(0, 2, (B,), generator=g)
    with torch.no_grad():
        logprobs, _, values = policy.evaluate(obs, actions)
    advantages = torch.where(actions == 0, 1.0, -1.0) * adv_scale  # action 0 is better
    return dict(obs=obs, actions=actions, logprobs=logprobs, values=values, advantages=advantages,
                returns=values + advantages + ret_offset, valid=torch.ones(B, dtype=torch.bool))


UPDATE_KW = dict(update_epochs=4, num_minibatches=4, clip_coef=0.2, vf_clip_coef=0.2,
                 ent_coef=0.0, vf_coef=0.5, max_grad_norm=0.5)


def test_ppo_update_moves_policy_toward_advantaged_actions():
    torch.manual_seed(0)
    policy = mlp_agent(OBS, gymnasium.spaces.Discrete(2), hidden=(16,))
    batch = make_batch(policy)
    zeros = torch.zeros_like(batch["actions"])

    def p0_and_vloss():
        with torch.no_grad():
            logp0, _, v = policy.evaluate(batch["obs"], zeros)
        return logp0.exp().mean().item(), 0.5 * ((v - batch["returns"]) ** 2).mean().item()

    p_before, v_before = p0_and_vloss()
    stats = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=1e-2), batch, **UPDATE_KW,
                       generator=np.random.default_rng(0))
    p_after, v_after = p0_and_vloss()
    assert p_before == pytest.approx(0.5, abs=0.02)
    assert p_after > 0.58
    assert v_after < v_before
    assert stats["num_minibatch_updates"] == 16
    assert stats["approx_kl"] > 0 and 0 <= stats["clipfrac"] <= 1
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac",
                          "explained_variance", "grad_norm", "num_minibatch_updates"}


def flat_params(policy):
    return torch.cat([p.detach().flatten() for p in policy.parameters()])


@pytest.mark.parametrize("max_grad_norm", [0.01, None])
def test_ppo_update_clips_gradient_norm(max_grad_norm):
    torch.manual_seed(0)
    policy = mlp_agent(OBS, gymnasium.spaces.Discrete(2), hidden=(16,))
    batch = make_batch(policy, adv_scale=10.0, ret_offset=100.0)
    before = flat_params(policy)
    kw = {**UPDATE_KW, "update_epochs": 1, "num_minibatches": 1, "max_grad_norm": max_grad_norm}
    stats = ppo_update(policy, torch.optim.SGD(policy.parameters(), lr=1.0), batch, **kw,
                       generator=np.random.default_rng(0))
    step = (flat_params(policy) - before).norm().item()
    assert stats["grad_norm"] > 1.0  # reported norm is the pre-clip one
    if max_grad_norm is None:  # SGD with lr 1 moves by exactly the gradient
        assert step == pytest.approx(stats["grad_norm"], rel=1e-4)
    else:
        assert step <= max_grad_norm * (1 + 1e-4)


def test_ppo_update_target_kl_stops_after_first_epoch():
    torch.manual_seed(0)
    policy = mlp_agent(OBS, gymnasium.spaces.Discrete(2), hidden=(16,))
    stats = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=3e-3), make_batch(policy),
                       **{**UPDATE_KW, "target_kl": 0.0}, generator=np.random.default_rng(0))
    assert stats["num_minibatch_updates"] == 4


def run_update(gen_seed):
    torch.manual_seed(0)
    policy = mlp_agent(OBS, gymnasium.spaces.Discrete(2), hidden=(16,))
    stats = ppo_update(policy, torch.optim.Adam(policy.parameters(), lr=3e-3), make_batch(policy),
                       **UPDATE_KW, generator=np.random.default_rng(gen_seed))
    return flat_params(policy), stats


def test_ppo_update_is_deterministic():
    w1, s1 = run_update(0)
    w2, s2 = run_update(0)
    w3, _ = run_update(1)
    assert torch.equal(w1, w2) and s1 == s2
    assert not torch.equal(w1, w3)  # the minibatch order does matter


def test_forward_float32_under_bfloat16_autocast():
    from training.ppo import forward_float32

    torch.manual_seed(0)
    for space in (gymnasium.spaces.Discrete(5), gymnasium.spaces.Box(-1, 1, (3,), np.float32)):
        policy = mlp_agent(gymnasium.spaces.Box(-1, 1, (8,), np.float32), space, hidden=(32, 32))
        obs = torch.randn(16, 8)
        ref_params, ref_value = forward_float32(policy, obs, None)
        params, value = forward_float32(policy, obs, torch.bfloat16)
        ref_params = ref_params if isinstance(ref_params, tuple) else (ref_params,)
        params = params if isinstance(params, tuple) else (params,)
        for p, r in zip((*params, value), (*ref_params, ref_value)):
            assert p.dtype == torch.float32
            assert torch.allclose(p, r, atol=0.05), (p - r).abs().max()
        assert not torch.equal(value, ref_value)  # the matmuls really ran in bfloat16

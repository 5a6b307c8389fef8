"""The learner's update without host synchronisation per minibatch (issue #25's CUDA learner, checked
on CPU): a non-finite minibatch is skipped inside the optimizer (found_inf, as AMP's GradScaler does),
on FusedAdam and on torch.optim.Adam's fused and plain paths alike, and ppo_update reads device values
on the host a fixed number of times per update, however many minibatches it takes."""

import numpy as np
import pytest
import torch

from training.adam import Adam, FusedAdam, adam_step, public_adam


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))


def _step(model, opt, found_inf):
    opt.zero_grad(set_to_none=True)
    model(torch.ones(3, 4)).pow(2).mean().backward()
    adam_step(opt, None if found_inf is None else torch.tensor(float(found_inf)))


def _state(model, opt):
    s = opt.state_dict()["state"]
    return ([p.detach().clone() for p in model.parameters()],
            {i: (float(e["step"]), e["exp_avg"].clone(), e["exp_avg_sq"].clone()) for i, e in s.items()})


@pytest.mark.parametrize("kind", ["private", "public-fused", "public-plain"])
def test_a_found_inf_step_changes_nothing_and_a_clear_one_is_a_plain_step(kind):
    make = {"private": lambda m: Adam(m.parameters(), lr=1e-2),
            "public-fused": lambda m: public_adam(list(m.parameters()), lr=1e-2, betas=(0.9, 0.999), eps=1e-8),
            "public-plain": lambda m: torch.optim.Adam(m.parameters(), lr=1e-2)}[kind]
    a, b = _model(), _model()
    oa, ob = make(a), make(b)
    assert isinstance(oa, FusedAdam) == (kind == "private")
    _step(a, oa, None), _step(b, ob, 0.0)  # found_inf 0 is the plain step, bit for bit
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    params, state = _state(b, ob)
    _step(b, ob, 1.0)  # skipped: weights, moments and step counts as they were
    params2, state2 = _state(b, ob)
    assert all(torch.equal(x, y) for x, y in zip(params, params2))
    assert state.keys() == state2.keys()
    for i in state:
        assert state[i][0] == state2[i][0] == 1.0
        assert torch.equal(state[i][1], state2[i][1]) and torch.equal(state[i][2], state2[i][2])
    _step(a, oa, None), _step(b, ob, 0.0)  # and training goes on alike
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_ppo_update_synchronises_a_fixed_number_of_times(monkeypatch):
    from training.ppo import ppo_update
    from tests_helpers_device import small_learner_batch

    policy, optimizer, batch = small_learner_batch()
    reads = {"n": 0}
    # (.numpy() is left out: it fails on a CUDA tensor, so it cannot hide a sync; the CPU-only NumPy
    # tanh, training/fast_tanh.py, uses it)
    for name in ("__float__", "__bool__", "__int__", "item", "tolist", "cpu"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            reads["n"] += 1
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)

    def run(minibatches, epochs):
        reads["n"] = 0
        ppo_update(policy, optimizer, batch, update_epochs=epochs, num_minibatches=minibatches, clip_coef=0.2,
                   vf_clip_coef=0.2, ent_coef=0.01, vf_coef=0.5, max_grad_norm=0.5,
                   generator=np.random.default_rng(0))
        return reads["n"]

    few, many = run(2, 1), run(16, 4)
    assert few == many, (few, many)  # nothing per minibatch
    assert many <= 8

"""training.adam.Adam against torch.optim.Adam(fused=True): same kernel, so the same bits. Its
fallback to torch.optim.Adam, where the private kernel is missing: tests/test_private_apis.py."""

import sys

import pytest
import torch

from training.adam import Adam, FusedAdam


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model, opt, steps, lr_at=lambda i: 1e-2, skip_last_layer_at=()):
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        opt.zero_grad(set_to_none=True)
        x = torch.randn(16, 5, generator=gen)
        out = model(x) if i not in skip_last_layer_at else model[1](model[0](x)).sum(-1, keepdim=True)
        out.pow(2).mean().backward()
        opt.step()


def test_this_torch_takes_the_private_path():
    """The fused kernel's checks pass on this torch, so the learner does not import torch._dynamo
    (if a torch release changes the kernel, this fails and the learner runs torch.optim.Adam)."""
    assert isinstance(Adam(_model().parameters(), lr=1e-2), FusedAdam)


def test_updates_are_bit_identical_to_torch_fused_adam():
    ours, ref = _model(), _model()
    # a varying lr (the learner's schedule) and steps where one layer gets no gradient at all
    kw = dict(steps=12, lr_at=lambda i: 1e-2 * (1 - i / 20), skip_last_layer_at={3, 4, 9})
    _train(ours, Adam(ours.parameters(), lr=1e-2, eps=1e-5), **kw)
    _train(ref, torch.optim.Adam(ref.parameters(), lr=1e-2, eps=1e-5, fused=True), **kw)
    for a, b in zip(ours.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    # and the parameters moved (a no-op optimizer would pass the equality above only if both did nothing)
    assert not torch.equal(next(_model().parameters()), next(ours.parameters()))


def test_state_dict_round_trips_with_torch_adam_both_ways():
    ours_m, ref_m = _model(), _model()
    ours, ref = Adam(ours_m.parameters(), lr=3e-3, eps=1e-5), torch.optim.Adam(ref_m.parameters(), lr=3e-3,
                                                                                eps=1e-5, fused=True)
    _train(ours_m, ours, 5, lr_at=lambda i: 3e-3)
    _train(ref_m, ref, 5, lr_at=lambda i: 3e-3)
    # ours -> torch: torch continues exactly as ours does
    a_m, b_m = _model(2), _model(2)
    for m in (a_m, b_m):
        m.load_state_dict(ours_m.state_dict())
    a = Adam(a_m.parameters(), lr=1.0)
    b = torch.optim.Adam(b_m.parameters(), lr=1.0, fused=True)
    a.load_state_dict(ours.state_dict())
    b.load_state_dict(ours.state_dict())
    assert a.param_groups[0]["lr"] == 3e-3 and b.param_groups[0]["lr"] == 3e-3
    _train(a_m, a, 3, lr_at=lambda i: 3e-3)
    _train(b_m, b, 3, lr_at=lambda i: 3e-3)
    assert all(torch.equal(x, y) for x, y in zip(a_m.parameters(), b_m.parameters()))
    # torch -> ours: the moments and step counts come across
    c = Adam(_model().parameters(), lr=1.0)
    c.load_state_dict(ref.state_dict())
    ref_state, c_state = ref.state_dict()["state"], c.state_dict()["state"]
    assert sorted(c_state) == sorted(ref_state) == [0, 1, 2, 3]
    for i in ref_state:
        assert torch.equal(c_state[i]["exp_avg"], ref_state[i]["exp_avg"])
        assert torch.equal(c_state[i]["exp_avg_sq"], ref_state[i]["exp_avg_sq"])
        assert float(c_state[i]["step"]) == float(ref_state[i]["step"]) == 5.0


def test_state_dict_is_a_copy():
    m = _model()
    opt = Adam(m.parameters(), lr=1e-2)
    _train(m, opt, 2)
    snap = opt.state_dict()
    before = snap["state"][0]["exp_avg"].clone()
    _train(m, opt, 2)
    assert torch.equal(snap["state"][0]["exp_avg"], before)


def test_mismatched_state_is_rejected_clearly():
    opt = Adam(_model().parameters(), lr=1e-2)
    other = torch.nn.Linear(5, 7)
    bad = Adam(other.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="holds 2 parameters, the policy has 4"):
        opt.load_state_dict(bad.state_dict())


def test_does_not_import_dynamo():
    code = ("import sys, torch\nfrom training.adam import Adam\n"
            "m = torch.nn.Linear(3, 2); o = Adam(m.parameters(), lr=0.1)\n"
            "m(torch.ones(1, 3)).sum().backward(); o.step(); o.state_dict()\n"
            "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

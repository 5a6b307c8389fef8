"""Each private torch or Ray API the trainer uses has a public fallback; these tests take it.

training/adam.py (torch._fused_adam_, torch._foreach_add_), training/fast_tanh.py
(torch.ops.aten.tanh_backward), ray_app/local_ray.py (Ray's private node object), and
training/hardware.py, which reads /proc/cpuinfo instead of torch.cpu's private probes. What each
private use buys: bench/private_apis.py, docs/BENCHMARKS.md.
"""

import types

import pytest
import torch

import training.adam as adam_mod
import training.fast_tanh as fast_tanh
import training.hardware as hardware
from training.adam import Adam, FusedAdam

# ------------------------------------------------------------------ Adam


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))


def _train(model, opt, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    for i in range(steps):
        opt.param_groups[0]["lr"] = 1e-2 * (1 - i / 20)  # the learner's schedule sets lr so
        opt.zero_grad(set_to_none=True)
        model(torch.randn(16, 5, generator=gen)).pow(2).mean().backward()
        opt.step()


class _Seen:
    """A module or object as the code under test sees it: some attributes hidden (None) or
    replaced, the rest the real ones. A private op hidden from training/adam.py stays available to
    torch.optim.Adam, as it would in a release that renamed or changed it."""

    def __init__(self, obj, **attrs):
        self._obj, self._attrs = obj, attrs

    def __getattr__(self, name):
        if name not in self._attrs:
            return getattr(self._obj, name)
        if self._attrs[name] is None:
            raise AttributeError(f"{type(self._obj).__name__!r} object has no attribute {name!r}")
        return self._attrs[name]


def _break_fused_adam(monkeypatch, how):
    def changed(*args, **kwargs):
        raise TypeError("_fused_adam_() got an unexpected keyword argument 'beta1'")

    ops = {"missing _fused_adam_": dict(_fused_adam_=None), "missing _foreach_add_": dict(_foreach_add_=None),
           "changed signature": dict(_fused_adam_=changed)}[how]
    monkeypatch.setattr(adam_mod, "torch", _Seen(torch, **ops))


@pytest.mark.parametrize("how", ["missing _fused_adam_", "missing _foreach_add_", "changed signature"])
def test_adam_falls_back_to_torch_fused_adam_with_the_same_bits(monkeypatch, how):
    ours_m, public_m = _model(), _model()
    ours = Adam(ours_m.parameters(), lr=1e-2, eps=1e-5)
    assert isinstance(ours, FusedAdam)
    _train(ours_m, ours, 6)
    _break_fused_adam(monkeypatch, how)
    public = Adam(public_m.parameters(), lr=1e-2, eps=1e-5)  # the learner's call, unchanged
    assert type(public) is torch.optim.Adam and public.param_groups[0]["fused"]
    assert public.param_groups[0]["eps"] == 1e-5
    _train(public_m, public, 6)
    # the same kernel behind both: bit-identical, not merely close
    assert all(torch.equal(a, b) for a, b in zip(ours_m.parameters(), public_m.parameters()))
    assert not torch.equal(next(_model().parameters()), next(public_m.parameters()))  # it moved


def test_adam_checkpoints_cross_between_the_private_and_the_public_path(monkeypatch):
    """A run checkpointed on one path resumes on the other exactly as it would have gone on."""
    straight_m, saved_m = _model(), _model()
    straight = Adam(straight_m.parameters(), lr=1e-2, eps=1e-5)
    _train(straight_m, straight, 5)
    saved = Adam(saved_m.parameters(), lr=1e-2, eps=1e-5)
    _train(saved_m, saved, 5)
    ours_state, weights = saved.state_dict(), saved_m.state_dict()
    _train(straight_m, straight, 3, seed=2)  # the private path, uninterrupted

    _break_fused_adam(monkeypatch, "missing _fused_adam_")
    resumed_m = _model(3)
    resumed_m.load_state_dict(weights)
    resumed = Adam(resumed_m.parameters(), lr=1.0)
    assert type(resumed) is torch.optim.Adam
    resumed.load_state_dict(ours_state)
    _train(resumed_m, resumed, 3, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(straight_m.parameters(), resumed_m.parameters()))
    public_state = resumed.state_dict()
    monkeypatch.undo()

    back = Adam(_model(4).parameters(), lr=1.0)
    assert isinstance(back, FusedAdam)
    back.load_state_dict(public_state)
    back_state = back.state_dict()
    assert back.param_groups[0]["lr"] == public_state["param_groups"][0]["lr"]
    for i, entry in public_state["state"].items():
        assert float(back_state["state"][i]["step"]) == float(entry["step"]) == 8.0
        assert torch.equal(back_state["state"][i]["exp_avg"], entry["exp_avg"])
        assert torch.equal(back_state["state"][i]["exp_avg_sq"], entry["exp_avg_sq"])


def test_adam_falls_back_to_torch_default_adam_where_the_device_has_no_fused_kernel(monkeypatch):
    """torch checks fused support only at the first step; the fallback probes it and drops to
    torch's default (foreach) Adam, whose arithmetic differs in rounding only."""
    class NoFusedAdam(torch.optim.Adam):
        def step(self, closure=None):
            if self.param_groups[0]["fused"]:
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors "
                                   "of supported devices")
            return super().step(closure)

    ref_m, public_m = _model(), _model()
    _train(ref_m, Adam(ref_m.parameters(), lr=1e-2, eps=1e-5), 6)
    _break_fused_adam(monkeypatch, "missing _fused_adam_")
    monkeypatch.setattr(torch.optim, "Adam", NoFusedAdam)
    public = Adam(public_m.parameters(), lr=1e-2, eps=1e-5)
    assert type(public) is NoFusedAdam and not public.param_groups[0]["fused"]
    _train(public_m, public, 6)
    for a, b in zip(ref_m.parameters(), public_m.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adam_probe_rejects_a_kernel_that_computes_something_else(monkeypatch):
    def sign_flipped(*args, **kwargs):
        torch._fused_adam_(*args, **{**kwargs, "maximize": True})

    monkeypatch.setattr(adam_mod, "torch", _Seen(torch, _fused_adam_=sign_flipped))
    assert not adam_mod.private_kernels_work(torch.device("cpu"), torch.float32)
    assert type(Adam(_model().parameters(), lr=1e-2)) is torch.optim.Adam


# ------------------------------------------------------------------ bfloat16 probe


@pytest.mark.parametrize("flags,native", [
    ("fpu sse avx2 avx512f avx512_bf16", True),   # AVX512-BF16 (e.g. AMD Zen 4)
    ("fpu sse avx2 avx512f amx_bf16 amx_tile amx_int8", True),  # AMX (Intel Sapphire Rapids)
    ("fpu sse avx2 avx512f avx512_vnni", False),
])
def test_native_bfloat16_reads_the_cpu_flags(tmp_path, monkeypatch, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("".join(f"processor\t: {i}\nmodel name\t: Fake CPU\nflags\t\t: {flags}\n\n" for i in range(2)))
    monkeypatch.setattr(hardware, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(hardware.sys, "platform", "linux")
    assert hardware.native_bfloat16("cpu") is native


def test_native_bfloat16_is_false_without_cpu_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.sys, "platform", "linux")
    monkeypatch.setattr(hardware, "CPUINFO", str(tmp_path / "missing"))
    assert hardware.native_bfloat16("cpu") is False
    arm = tmp_path / "arm"  # ARM lists "Features", not "flags"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\n\n")
    monkeypatch.setattr(hardware, "CPUINFO", str(arm))
    assert hardware.native_bfloat16("cpu") is False
    mixed = tmp_path / "mixed"  # a flag only some CPUs list does not count
    mixed.write_text("processor\t: 0\nflags\t: avx512_bf16 sse\n\nprocessor\t: 1\nflags\t: sse\n\n")
    monkeypatch.setattr(hardware, "CPUINFO", str(mixed))
    assert hardware.native_bfloat16("cpu") is False


def test_native_bfloat16_is_false_off_linux(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t: avx512_bf16 amx_tile\n\n")
    monkeypatch.setattr(hardware, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(hardware.sys, "platform", "darwin")
    assert hardware.native_bfloat16("cpu") is False


def test_native_bfloat16_agrees_with_torchs_private_probe_here():
    """Where this torch still has its private CPU probes, the flags give the same answer."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is None or bf16 is None or not hardware.sys.platform.startswith("linux"):
        pytest.skip("no private probe to compare with")
    assert hardware.native_bfloat16("cpu") == bool(amx() or bf16())


# ------------------------------------------------------------------ tanh backward


def test_tanh_backward_lookup_gives_none_without_the_op(monkeypatch):
    monkeypatch.setattr(torch, "ops", types.SimpleNamespace(aten=types.SimpleNamespace()))
    assert fast_tanh._aten_tanh_backward() is None


def _ulps(a, b, mantissa_bits):
    """|a - b| in units in the last place of b's binade (float64)."""
    a, b = a.double(), b.double()
    _, exponent = torch.frexp(b)
    return ((a - b).abs() / torch.ldexp(torch.ones_like(b), exponent - 1 - mantissa_bits)).nan_to_num(0.0)


@pytest.mark.parametrize("dtype,mantissa_bits", [(torch.float32, 23), (torch.bfloat16, 7)])
def test_tanh_public_backward_is_the_kernels_bits(monkeypatch, dtype, mantissa_bits):
    """Without torch's internal tanh_backward, Tanh's backward is public ops that give the same
    bits in float32 and bfloat16 here; forward and backward stay within 1-2 ulp of nn.Tanh's."""
    g = torch.Generator().manual_seed(0)
    specials = torch.tensor([0.0, -0.0, 20.0, -20.0, 1e-30, -1e-30, 0.5, -0.5])
    x = torch.cat([torch.randn(256 * 256, generator=g) * 4, torch.randn(4096, generator=g) * 1e-3, specials]).to(dtype)
    grad = torch.randn(x.shape, generator=g).to(dtype)
    private_x = x.clone().requires_grad_()
    y_private = fast_tanh.Tanh()(private_x)
    y_private.backward(grad)

    monkeypatch.setattr(fast_tanh, "_TANH_BACKWARD", None)
    ours = x.clone().requires_grad_()
    y = fast_tanh.Tanh()(ours)
    y.backward(grad)
    assert torch.equal(y, y_private) and torch.equal(ours.grad, private_x.grad)  # same bits
    assert torch.equal(ours.grad, torch.ops.aten.tanh_backward(grad, y.detach()))
    # the literal grad * (1 - y*y) is not the same bits (two roundings of 1 - y*y): why addcmul
    literal = grad * (1 - y.detach() * y.detach())
    assert not torch.equal(literal, ours.grad) and _ulps(literal, ours.grad, mantissa_bits).max() > 0

    ref_x = x.clone().requires_grad_()
    ref = torch.nn.Tanh()(ref_x)
    ref.backward(grad)
    assert _ulps(y, ref, mantissa_bits).max() <= 1
    # nn.Tanh's gradient is that of its own y; a 1-ulp y moves grad * (1 - y*y) by up to
    # 2|y| ulp(y)|grad| <= 2^-23 |grad|, i.e. within 2 ulp of the incoming gradient's scale
    scale = torch.ldexp(torch.ones(()), torch.tensor(-mantissa_bits)) * grad.double().abs()
    assert ((ours.grad.double() - ref_x.grad.double()).abs() <= 2 * scale + 1e-45).all()


# ------------------------------------------------------------------ Ray's head services


class _FakeNode:
    def __init__(self, head=True, kill_raises_at=None):
        self.head, self.all_processes, self.killed = head, {"monitor": [1], "dashboard": [2], "log_monitor": [3]}, []
        self.kill_raises_at = kill_raises_at

    def _kill_process_type(self, kind, allow_graceful, check_alive, wait):
        if kind == self.kill_raises_at:
            raise TypeError("_kill_process_type() got an unexpected keyword argument 'wait'")
        assert (allow_graceful, check_alive, wait) == (False, False, True)
        self.killed.append(kind)


def _with_node(monkeypatch, node):
    import ray

    monkeypatch.setattr(ray._private.worker, "_global_node", node, raising=False)


def test_ray_head_services_are_stopped_through_the_node(monkeypatch):
    from ray_app.local_ray import stop_unused_head_services

    node = _FakeNode()
    _with_node(monkeypatch, node)
    assert stop_unused_head_services() == ["monitor", "dashboard"] == node.killed


def test_ray_private_node_missing_stops_nothing(monkeypatch, caplog):
    import ray

    from ray_app import local_ray

    monkeypatch.delattr(ray._private.worker, "_global_node", raising=False)
    monkeypatch.setattr(local_ray.ray, "init", lambda **kw: None)  # no Ray started
    with caplog.at_level("DEBUG", logger="ray_app.local_ray"):
        assert local_ray.start_local_ray(num_cpus=1) == []
    assert len(caplog.records) == 1 and caplog.records[0].levelname == "DEBUG"


@pytest.mark.parametrize("node", [
    types.SimpleNamespace(head=True, all_processes={"monitor": [1], "dashboard": [2]}),  # no _kill_process_type
    types.SimpleNamespace(head=True, _kill_process_type=lambda *a, **k: pytest.fail("killed")),  # no all_processes
    _FakeNode(kill_raises_at="monitor"),  # a changed signature
    _FakeNode(head=False),  # joined a cluster: its processes are not ours
    None,  # Ray not started here
])
def test_ray_private_node_changed_stops_nothing(monkeypatch, capsys, node):
    from ray_app.local_ray import stop_unused_head_services

    _with_node(monkeypatch, node)
    assert stop_unused_head_services() == []
    assert capsys.readouterr() == ("", "")
    assert getattr(node, "killed", []) == []


def test_ray_stops_what_it_stopped_before_a_failure(monkeypatch):
    from ray_app.local_ray import stop_unused_head_services

    node = _FakeNode(kill_raises_at="dashboard")
    _with_node(monkeypatch, node)
    assert stop_unused_head_services() == ["monitor"] == node.killed


@pytest.mark.slow
@pytest.mark.parametrize("private_api", [True, False])
def test_embedded_ray_with_and_without_the_private_node_api(monkeypatch, private_api):
    """A real embedded Ray: the two services go where Ray's node API is as expected; where it is
    not (here: the node as local_ray sees it has no _kill_process_type), both stay and Ray works
    as with plain ray.init."""
    import os
    import time

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import psutil
    import ray

    from ray_app import local_ray

    earlier = {p.pid for p in psutil.Process().children(recursive=True)}

    def services() -> list[str]:
        cmds = []
        for p in psutil.Process().children(recursive=True):
            try:
                cmds += [" ".join(p.cmdline())] if p.pid not in earlier else []
            except psutil.Error:  # exited meanwhile
                pass
        return [name for name, needle in (("monitor", "autoscaler/_private/monitor.py"),
                                          ("dashboard", "dashboard/dashboard.py")) if any(needle in c for c in cmds)]

    try:
        if private_api:
            stopped = local_ray.start_local_ray(num_cpus=1)
        else:
            ray.init(address="local", num_cpus=1, include_dashboard=False)  # start_local_ray's call
            node = _Seen(ray._private.worker._global_node, _kill_process_type=None)
            seen = _Seen(ray, _private=_Seen(ray._private, worker=_Seen(ray._private.worker, _global_node=node)))
            monkeypatch.setattr(local_ray, "ray", seen)
            stopped = local_ray.stop_unused_head_services()
        assert stopped == (["monitor", "dashboard"] if private_api else [])
        assert services() == ([] if private_api else ["monitor", "dashboard"])
        assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    finally:
        ray.shutdown()
    deadline = time.time() + 10
    while services() and time.time() < deadline:
        time.sleep(0.2)
    assert services() == []

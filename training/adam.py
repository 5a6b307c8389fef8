"""The learner's Adam: torch's fused Adam kernel called directly, with ``torch.optim.Adam`` as the net.

Why not always ``torch.optim.Adam``: its constructor (``add_param_group``) and ``step`` are wrapped
in torch's lazy dynamo guard, so the first call imports ``torch._dynamo``, a compiler this project
never uses, into every learner process: resident memory and start-up time (docs/BENCHMARKS.md,
"Private torch and Ray APIs"). ``FusedAdam`` runs the kernel ``torch.optim.Adam(fused=True)`` runs
(``torch._fused_adam_``, one pass over all parameters, CPU and CUDA) without that guard.

Both kernels it calls are private. ``Adam(...)`` checks them on one scalar before using them and
otherwise returns ``torch.optim.Adam(fused=True)`` (plain ``torch.optim.Adam`` where the device has
no fused kernel). Updates are bit-identical either way, and ``FusedAdam.state_dict`` has
``torch.optim.Adam``'s layout, so checkpoints written on one path load on the other
(tests/test_adam.py).
"""

from __future__ import annotations

import torch


def Adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):  # noqa: N802
    """Adam (no weight decay, no AMSGrad) over ``params``' trainable tensors, all on one device in
    one dtype: a ``FusedAdam`` where this torch's private fused kernel works, else a
    ``torch.optim.Adam``. Named and called like a class: the learner constructs its optimizer so."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("Adam got no trainable parameters")
    if len({(p.device, p.dtype) for p in params}) != 1:
        raise ValueError("Adam's parameters must share one device and dtype")
    if private_kernels_work(params[0].device, params[0].dtype):
        return FusedAdam(params, lr=lr, betas=betas, eps=eps)
    return public_adam(params, lr=lr, betas=betas, eps=eps)


def private_kernels_work(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch._foreach_add_`` and ``torch._fused_adam_`` exist here, take the arguments
    ``FusedAdam`` passes, and make Adam's first step (``lr * sign(grad)``) on a scalar. Private
    ops may change or vanish in any torch release; this is what keeps such a release training."""
    add, fused = getattr(torch, "_foreach_add_", None), getattr(torch, "_fused_adam_", None)
    if add is None or fused is None:
        return False
    p, g = torch.ones(1, device=device, dtype=dtype), torch.full((1,), -3.0, device=device, dtype=dtype)
    m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.zeros((), device=device)
    try:
        add([step], 1)
        fused([p], [g], [m], [v], [], [step], lr=0.5, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=0.0,
              amsgrad=False, maximize=False)
        ok = abs(float(p) - 1.5) < 1e-2 and float(step) == 1.0
        # the device-side skip (``FusedAdam.step(found_inf)``): a step with found_inf 1 changes nothing
        fused([p], [g], [m], [v], [], [step], lr=0.5, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=0.0,
              amsgrad=False, maximize=False, found_inf=torch.ones((), device=device))
        return ok and abs(float(p) - 1.5) < 1e-2
    except (RuntimeError, TypeError, ValueError):
        return False


def adam_step(optimizer, found_inf: torch.Tensor | None = None) -> None:
    """``optimizer.step()``, skipped where ``found_inf`` (a 0/1 float32 scalar on the parameters'
    device) is 1. ``FusedAdam`` and ``torch.optim.Adam(fused=True)`` skip inside the fused kernel,
    on the device, as AMP's GradScaler makes them (torch.optim reads the optimizer's ``found_inf``
    attribute); any other optimizer (torch.optim.Adam's for-each or single-tensor paths, on a
    device without the fused kernel) reads the flag on the host: one synchronisation per step, on
    the fallback only."""
    if found_inf is None:
        optimizer.step()
    elif isinstance(optimizer, FusedAdam):
        optimizer.step(found_inf=found_inf)
    elif any(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = found_inf
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not bool(found_inf):
        optimizer.step()


def public_adam(params: list, lr: float, betas: tuple[float, float], eps: float) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` on its fused kernel where the device has one, else on its default."""
    kw = dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps))
    # torch checks fused support only at the first step: try it on a scalar of the same kind
    probe = torch.zeros(1, device=params[0].device, dtype=params[0].dtype, requires_grad=True)
    probe.grad = torch.ones_like(probe)
    try:
        torch.optim.Adam([probe], fused=True, **kw).step()
    except RuntimeError:
        return torch.optim.Adam(params, **kw)
    return torch.optim.Adam(params, fused=True, **kw)


class FusedAdam:
    """Adam (no weight decay, no AMSGrad) over one list of same-device, same-dtype parameters, on
    torch's private fused kernel; construct it through ``Adam``, which checks that kernel first.

    ``param_groups`` is a one-element list whose ``"lr"`` the learner's schedule sets before each
    update, as with a torch optimizer."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.param_groups = [dict(lr=float(lr), betas=(float(betas[0]), float(betas[1])), eps=float(eps))]
        # the fused kernel keeps the step count as a float32 tensor beside the parameters
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self, found_inf: torch.Tensor | None = None) -> None:
        """One Adam step. ``found_inf`` (a float32 scalar tensor on the parameters' device, 0 or 1,
        as AMP's GradScaler passes it): where it is 1 the kernel leaves the parameters, the moments
        and the step counts as they were, on the device, with no host synchronisation."""
        # a parameter with no gradient this step keeps its value and its moments, as in torch
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        pick = lambda xs: [xs[i] for i in live]  # noqa: E731
        steps = pick(self.steps)
        torch._foreach_add_(steps, 1)
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        skip = {} if found_inf is None else dict(found_inf=found_inf)
        torch._fused_adam_(
            pick(self.params), [self.params[i].grad for i in live], pick(self.exp_avgs), pick(self.exp_avg_sqs),
            [], steps, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
            amsgrad=False, maximize=False, **skip,
        )
        if found_inf is not None:  # as torch.optim.Adam(fused=True) does: a skipped step is not counted
            torch._foreach_sub_(steps, [found_inf] * len(steps))

    # ------------------------------------------------------------ torch.optim.Adam's layout
    def state_dict(self) -> dict:
        """A copy, in ``torch.optim.Adam.state_dict()``'s layout (parameters by index)."""
        group = self.param_groups[0]
        state = {
            i: dict(step=s.clone(), exp_avg=m.clone(), exp_avg_sq=v.clone())
            for i, (s, m, v) in enumerate(zip(self.steps, self.exp_avgs, self.exp_avg_sqs))
            if float(s) > 0  # torch has no entry for a parameter that never stepped
        }
        return dict(state=state, param_groups=[dict(
            lr=group["lr"], betas=group["betas"], eps=group["eps"], weight_decay=0.0, amsgrad=False,
            maximize=False, foreach=None, capturable=False, differentiable=False, fused=True,
            decoupled_weight_decay=False, params=list(range(len(self.params))),
        )])

    def load_state_dict(self, state_dict: dict) -> None:
        """Load this class's or ``torch.optim.Adam``'s state (any of its step/fused variants)."""
        groups = state_dict.get("param_groups")
        if not isinstance(groups, list) or len(groups) != 1:
            raise ValueError("optimizer state: expected exactly one parameter group")
        group = groups[0]
        if len(group.get("params", ())) != len(self.params):
            raise ValueError(f"optimizer state holds {len(group.get('params', ()))} parameters, "
                             f"the policy has {len(self.params)}")
        if group.get("amsgrad") or group.get("weight_decay"):
            raise ValueError("optimizer state uses AMSGrad or weight decay, which this Adam does not do")
        state = state_dict.get("state", {})
        for pos, key in enumerate(group["params"]):
            p, entry = self.params[pos], state.get(key)
            if entry is None:  # never stepped
                self.steps[pos].zero_(), self.exp_avgs[pos].zero_(), self.exp_avg_sqs[pos].zero_()
                continue
            for name, dst in (("exp_avg", self.exp_avgs[pos]), ("exp_avg_sq", self.exp_avg_sqs[pos])):
                src = entry[name]
                if src.shape != p.shape:
                    raise ValueError(f"optimizer state: {name} of parameter {pos} has shape "
                                     f"{tuple(src.shape)}, the parameter {tuple(p.shape)}")
                dst.copy_(src.to(device=p.device, dtype=p.dtype))
            self.steps[pos].fill_(float(entry["step"]))
        self.param_groups[0].update(lr=float(group["lr"]), betas=tuple(map(float, group["betas"])),
                                    eps=float(group["eps"]))

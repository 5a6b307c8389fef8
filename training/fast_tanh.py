"""tanh for CPU policies: see ``Tanh``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _aten_tanh_backward():
    """torch's tanh backward kernel (the one ``nn.Tanh``'s backward runs), an internal op: None
    where this torch has none."""
    try:
        return torch.ops.aten.tanh_backward
    except (AttributeError, RuntimeError):
        return None


_TANH_BACKWARD = _aten_tanh_backward()
_ONE = torch.ones(())


def tanh_backward(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradient of tanh at the input whose tanh is ``y``: ``grad * (1 - y * y)``."""
    if _TANH_BACKWARD is not None:
        return _TANH_BACKWARD(grad, y)
    # Public ops, bit-identical to the kernel's float32 and bfloat16 results on this build
    # (tests/test_private_apis.py): the kernel computes in float32 with 1 - y*y as one fused
    # multiply-add, as addcmul does, and rounds once to the input's dtype. The literal
    # grad * (1 - y * y) is not: it rounds 1 - y*y twice (most float32 results 1 ulp off) and, in
    # bfloat16, every intermediate (up to 1 ulp).
    yf = y.float()
    return torch.addcmul(_ONE, yf, yf, value=-1).mul_(grad.float()).to(y.dtype)


class _TanhViaNumPy(torch.autograd.Function):
    """tanh of a CPU tensor through NumPy's SIMD kernel: this torch build's CPU tanh does not
    vectorize, NumPy's does (docs/BENCHMARKS.md, "Private torch and Ray APIs").
    NumPy's float32 tanh is within 1 ulp of the correctly rounded value (torch's is correctly
    rounded almost everywhere), elementwise and the same wherever a value sits in the batch, so
    runners and the learner still compute identical log-probs in sync mode. bfloat16 goes through
    float32 and is rounded back."""

    @staticmethod
    def forward(ctx, x):
        y = torch.from_numpy(np.tanh(x.detach().float().contiguous().numpy())).to(x.dtype)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return tanh_backward(grad, y)


class Tanh(nn.Module):
    """``nn.Tanh``, faster on CPU (``_TanhViaNumPy``); torch's own kernel elsewhere. It has no
    parameters, so state dicts are those of ``nn.Tanh`` models."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
            return _TanhViaNumPy.apply(x)
        return torch.tanh(x)

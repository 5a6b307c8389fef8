"""tanh for CPU policies: see ``Tanh``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class _TanhViaNumPy(torch.autograd.Function):
    """tanh of a CPU tensor through NumPy's SIMD kernel. This torch build's CPU tanh does not
    vectorize: 2.7-2.8 ms for 4,096 x 256 floats on one core here, against 0.44 ms for NumPy's
    (and 0.46 ms for torch's own sigmoid). The four tanh layers of a 256,256 actor-critic made a
    bfloat16 update 25-35% slower and a runner's rollout 5-20% (docs/BENCHMARKS.md).
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
        return torch.ops.aten.tanh_backward(grad, y)  # the same kernel nn.Tanh's backward runs


class Tanh(nn.Module):
    """``nn.Tanh``, faster on CPU (``_TanhViaNumPy``); torch's own kernel elsewhere. It has no
    parameters, so state dicts are those of ``nn.Tanh`` models."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16):
            return _TanhViaNumPy.apply(x)
        return torch.tanh(x)

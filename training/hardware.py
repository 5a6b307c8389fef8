"""What the learner's hardware runs natively."""

from __future__ import annotations

import torch


def native_bfloat16(device: str) -> bool:
    """Whether bfloat16 matmuls run natively here (AMX or AVX512-BF16 on CPU, Ampere+ on CUDA);
    elsewhere they are emulated and slower than float32."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()

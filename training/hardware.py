"""What the learner's hardware runs natively."""

from __future__ import annotations

import sys

import torch

CPUINFO = "/proc/cpuinfo"
# AMX tiles or AVX512-BF16: the CPU features oneDNN's native bfloat16 matmuls run on
BFLOAT16_CPU_FLAGS = ("amx_tile", "avx512_bf16")


def native_bfloat16(device: str) -> bool:
    """Whether bfloat16 matmuls run natively here (AMX or AVX512-BF16 on CPU, Ampere+ on CUDA);
    elsewhere they are emulated and slower than float32."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # torch answers this only through private functions (torch.cpu._is_amx_tile_supported and
    # _is_avx512_bf16_supported); Linux lists the same features, and clears those the OS cannot run
    if not sys.platform.startswith("linux"):
        return False
    flags = cpu_flags()
    return any(flag in flags for flag in BFLOAT16_CPU_FLAGS)


def cpu_flags(path: str | None = None) -> set[str]:
    """The feature flags every CPU in ``path`` (default ``CPUINFO``) lists; empty if it cannot be
    read or lists none (e.g. ARM's, whose line is "Features")."""
    try:
        with open(path or CPUINFO, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    per_cpu = [set(value.split()) for key, sep, value in (line.partition(":") for line in lines)
               if sep and key.strip() == "flags"]
    return set.intersection(*per_cpu) if per_cpu else set()

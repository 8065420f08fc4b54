"""Host-side helpers shared by the format kernel modules: dtype views, tile sizes, launches.

Why: every kernel reads fp32/fp16/bf16 and writes the input dtype, with bf16 passed as an int16
view (see :mod:`qruntime.kernels._jit`); every launch must disable FMA contraction. Keeping that
in one place keeps the format modules about numerics only.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton

from .._jit import KIND_BF16, KIND_F16, KIND_F32
from ..registry import KernelUnsupported

__all__ = [
    "ELEMS",
    "MAX_LANES",
    "alloc_like",
    "as_kernel_input",
    "launch",
    "next_pow2",
    "row_tile",
    "wide",
]

_KINDS = {torch.float32: KIND_F32, torch.float16: KIND_F16, torch.bfloat16: KIND_BF16}

#: Elements per program of the streaming kernels: enough bytes in flight per SM to approach the
#: copy bandwidth, small enough to stay in registers. ``QRUNTIME_KERNEL_ELEMS`` overrides it
#: (used by the GPU benchmark to try other sizes without editing code).
ELEMS = int(os.environ.get("QRUNTIME_KERNEL_ELEMS", "4096"))
#: Largest amax group one program reduces in registers (one pass); larger groups take the
#: reference's torch reduction first and then the elementwise kernel (two passes, same bits).
MAX_LANES = int(os.environ.get("QRUNTIME_KERNEL_MAX_LANES", "16384"))


def next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def wide(numel: int) -> bool:
    """Whether element offsets need 64-bit arithmetic."""
    return numel >= 2**31 - 2**20


def as_kernel_input(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(x_contiguous, pointer_view, kind)``; KernelUnsupported for other dtypes (fp64, fp8)."""
    kind = _KINDS.get(x.dtype)
    if kind is None:
        raise KernelUnsupported(f"no kernel for dtype {x.dtype}")
    x = x.contiguous()
    return x, (x.view(torch.int16) if kind == KIND_BF16 else x), kind


def alloc_like(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A contiguous output of ``x``'s shape and dtype, its pointer view and storage kind."""
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    kind = _KINDS[x.dtype]
    return y, (y.view(torch.int16) if kind == KIND_BF16 else y), kind


def row_tile(block: int, numel_hint: int = ELEMS) -> tuple[int, int]:
    """``(groups_per_program, lanes)`` for groups of ``block`` elements (lanes = next pow2)."""
    lanes = next_pow2(block)
    if lanes > MAX_LANES:
        raise KernelUnsupported(f"group of {block} elements exceeds {MAX_LANES} lanes")
    return max(1, numel_hint // lanes), lanes


def warps_for(elems: int) -> int:
    """4 warps for the usual 4096-element tile, more for the large one-pass groups."""
    return max(4, min(16, elems // 1024))


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, elems: int, **meta: Any) -> None:
    """Launch with FMA contraction off (bit-exactness) and a warp count for ``elems``."""
    kernel[grid](*args, **meta, num_warps=warps_for(elems), enable_fp_fusion=False)


def cdiv(a: int, b: int) -> int:
    return triton.cdiv(a, b)

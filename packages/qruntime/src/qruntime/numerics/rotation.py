"""Normalized Walsh-Hadamard rotation of the last dim (QuaRot/SpinQuant RHT).

Semantics: docs/numerics.md, 'Rotation'.

Model Optimizer calls the external CUDA package ``fast_hadamard_transform`` (absent on CPU, so
``rotate=True`` fails there). This is an independent torch implementation of the same transform:
the last dim is split into blocks of ``b`` (given, else the full dim when it is a power of two,
else its largest power-of-two divisor, which must be >= 2) and each block is multiplied by
``H_b / sqrt(b)`` (Sylvester order). The butterfly runs in float32 and the result is cast back to
the input dtype once. The transform is orthonormal and self-inverse; its last-ulp rounding is not
specified (it depends on the CUDA package's butterfly order; docs/numerics.md, 'Choices', item 6).
"""

from __future__ import annotations

import math

import torch
from qconfig.spec import RotationSpec

__all__ = ["hadamard_block_size", "normalized_hadamard_transform", "rotate"]


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def hadamard_block_size(dim: int, block_size: int | None = None) -> int:
    """The rotation block for a last dim of ``dim`` (raises like Model Optimizer when impossible)."""
    if block_size is None:
        block_size = dim if _is_pow2(dim) else dim & -dim
        if block_size < 2:
            raise RuntimeError(
                f"Block RHT: dimension {dim} has no power-of-2 divisor >= 2. "
                "Set rotate.block_size explicitly or use a dimension divisible by a power of 2."
            )
    if not _is_pow2(block_size):
        raise ValueError(f"Block RHT: block_size must be power of 2, got {block_size}.")
    if dim % block_size:
        raise RuntimeError(
            f"Block RHT: inputs.shape[-1]={dim} is not divisible by block_size={block_size}."
        )
    return block_size


def normalized_hadamard_transform(
    x: torch.Tensor, *, block_size: int | None = None, out_dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``x_blk @ H_b * b**-0.5`` for every block of ``b`` elements of the last dim.

    Computed with ``log2(b)`` butterfly stages (O(n log b)), differentiable by autograd.
    """
    dim = x.shape[-1]
    b = hadamard_block_size(dim, block_size)
    y = x.to(torch.float32).reshape(-1, b)
    h = 1
    while h < b:
        v = y.reshape(-1, b // (2 * h), 2, h)
        lo, hi = v[:, :, 0, :], v[:, :, 1, :]
        y = torch.stack((lo + hi, lo - hi), dim=2).reshape(-1, b)
        h *= 2
    y = y * (1.0 / math.sqrt(b))
    return y.reshape(x.shape).to(out_dtype or x.dtype)


def rotate(x: torch.Tensor, spec: RotationSpec) -> torch.Tensor:
    """Apply the rotation of an attribute set (input dtype preserved)."""
    return normalized_hadamard_transform(x, block_size=spec.block_size)

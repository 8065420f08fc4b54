"""LSQ (learned step size) fake quantization of static-block weights, with its gradients.

docs/qat.md, 'Learned amax'. A weight converted by ``lsq`` keeps two per-block amaxes: ``pre``
sets the step the weight is divided by before the cast, ``post`` the step the cast codes are
multiplied by afterwards::

    y = cast(w / s_pre) * s_post,    s = amax / Q   (Q: 6 for FP4 E2M1, qmax for INT)

Why this is its own module: unlike the fixed-amax formats, here autograd must reach the amaxes,
so everything is written in differentiable torch ops (the casts are the straight-through
functions of :mod:`.ste`). The gradients are those of Model Optimizer 0.47.0's formula:

* the step is floored, ``s = where(s <= floor, floor, s)``: a floored block passes no gradient to
  its amax. The floor is ``1e-8`` for unquantized steps; when the block steps are FP8-quantized
  it is ``2^-9 * s_global`` (the smallest E4M3 subnormal relative to the per-tensor scale);
* a quantized step is E4M3 fake-quantized with the per-tensor scale ``s_global = global_amax /
  Q`` as its amax, straight through where ``|s| <= s_global`` and zero elsewhere;
* ``dL/dw = dL/dy * s_post / s_pre`` where the cast's input is in range (``|v| <= 6`` for FP4,
  ``qmin <= v <= qmax`` for INT), else 0; ``dL/ds_post = sum(dL/dy * cast(v))`` per block;
  ``dL/ds_pre = -sum(dL/dy * s_post * w / s_pre^2)`` over the in-range elements of the block.

The divisions are ``tensor / python float`` as in Model Optimizer, so each device rounds them as
it does there.
"""

from __future__ import annotations

import torch

from .fp8 import fake_quant_e4m3
from .integer import int_range
from .ste import fp4_cast_ste, int_cast_ste, straight_through

__all__ = [
    "FP8_E4M3_MIN_POSITIVE",
    "lsq_block_scale",
    "lsq_cast",
    "lsq_fake_quant",
    "lsq_max_bound",
    "step_from_amax",
]

#: The smallest positive E4M3 value (a subnormal, 2^-9): the floor of a quantized block step,
#: relative to the per-tensor scale.
FP8_E4M3_MIN_POSITIVE = torch.finfo(torch.float8_e4m3fn).smallest_normal / (2**3)

_FP4_MAX = 6.0


def lsq_max_bound(num_bits: int | tuple[int, int], unsigned: bool, narrow_range: bool) -> float:
    """``Q``: the largest code of the element format (6 for E2M1, ``qmax`` for INT)."""
    if isinstance(num_bits, tuple):
        if tuple(num_bits) != (2, 1):
            raise ValueError(f"LSQ supports FP4 E2M1 and INT elements, not num_bits={num_bits}")
        return _FP4_MAX
    return float(int_range(num_bits, unsigned, narrow_range)[1])


def step_from_amax(
    amax: torch.Tensor, max_bound: float, floor: float | torch.Tensor = 1e-8
) -> torch.Tensor:
    """``amax / Q`` in float32, floored (a floored step passes no gradient to its amax)."""
    step = amax.float() / max_bound
    return torch.where(step <= floor, floor, step)


def lsq_block_scale(
    amax: torch.Tensor, max_bound: float, global_amax: torch.Tensor | None = None
) -> torch.Tensor:
    """The per-block step of ``amax``; FP8-quantized against ``global_amax`` when one is given
    (NVFP4's two-level scales), else floored at ``1e-8``."""
    if global_amax is None:
        return step_from_amax(amax, max_bound)
    per_tensor = step_from_amax(global_amax, max_bound)
    floor = FP8_E4M3_MIN_POSITIVE * per_tensor.reshape(-1)
    step = step_from_amax(amax, max_bound, floor)
    return straight_through(
        step, lambda s: fake_quant_e4m3(s, per_tensor), clip_amax=per_tensor.detach()
    )


def lsq_cast(
    v: torch.Tensor, num_bits: int | tuple[int, int], unsigned: bool, narrow_range: bool
) -> torch.Tensor:
    """The unscaled cast with its straight-through mask: E2M1 for ``(2, 1)``, else INT."""
    if isinstance(num_bits, tuple):
        return fp4_cast_ste(v)
    return int_cast_ste(v, num_bits, unsigned, narrow_range)


def lsq_fake_quant(
    blocks: torch.Tensor,
    scale_pre: torch.Tensor,
    scale_post: torch.Tensor,
    num_bits: int | tuple[int, int],
    unsigned: bool = False,
    narrow_range: bool = True,
) -> torch.Tensor:
    """``cast(blocks / s_pre) * s_post`` per row of ``blocks`` (``(num_blocks, block_size)``),
    computed in float32 and returned in ``blocks.dtype``."""
    if blocks.dim() != 2 or blocks.shape[0] != scale_pre.numel():
        raise ValueError(
            f"blocks must be (num_blocks, block_size) with one step per block; got "
            f"{tuple(blocks.shape)} for {scale_pre.numel()} steps"
        )
    v = blocks.float() / scale_pre.float().view(-1, 1)
    codes = lsq_cast(v, num_bits, unsigned, narrow_range)
    return (codes * scale_post.view(-1, 1).to(codes.dtype)).to(blocks.dtype)

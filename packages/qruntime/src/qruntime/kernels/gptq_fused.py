"""Triton kernel of one GPTQ block for NVFP4-static weights (``gptq`` with ``fused: true``).

Why a kernel: the unfused GPTQ loop launches a dozen small torch operations per weight column.
Here one program per output row keeps the block's columns in registers and walks them in order:
per column the NVFP4 quantize-dequantize with the two-level scale (the row's block amax over
``6 * global_scale``, saturated at 448, rounded to FP8 E4M3, times ``global_scale``), the error
divided by ``U[j, j]``, and the update of the row's later columns with ``U[j, :]`` — all without
leaving the program. The trailing update of the columns after the block is one matrix product on
the host (:func:`qruntime.calibrate.gptq_update.fused_nvfp4_update`).

Why this arithmetic and not the exact-bits style of the format kernels (``kernels/_jit.py``):
``fused: true`` reproduces Model Optimizer's fused kernel, whose numbers are defined by the
Triton operations it uses. The float operations here are those, in that order and grouping —
fp32 ``/`` (the GPU lowers it as Triton lowers every fp32 ``/``), ``w - err * u`` (contracted to
an FMA wherever Triton contracts it; the launch keeps Triton's default), the FP4 threshold
chain, the sign chosen by ``x >= 0`` — so that the same instructions come out on a GPU. One
step is made exact instead: the cast of the block scale to E4M3 is the round-to-nearest-even of
:func:`~qruntime.kernels._jit.e4m3_round` (what the GPU's saturating RN conversion does for these
non-negative, already saturated values), because the interpreter's float8 cast does not round
ties to even. In Triton's CPU interpreter (no FMA, IEEE division) the kernel equals the torch
reference :func:`qruntime.calibrate.gptq_update.fused_nvfp4_block` bit for bit.

Unlike Model Optimizer's kernel, blocks whose width is not a power of two run (masked lanes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from qruntime.kernels._jit import e4m3_round

__all__ = ["gptq_nvfp4_block"]


@triton.jit
def _e2m1_magnitude(a):
    """``|x| / scale`` to the nearest FP4 magnitude; the boundaries alternate ``<=``/``<`` so
    that ties go to the even code (NaN falls through every test to 6)."""
    return tl.where(
        a <= 0.25,
        0.0,
        tl.where(
            a < 0.75,
            0.5,
            tl.where(
                a <= 1.25,
                1.0,
                tl.where(
                    a < 1.75,
                    1.5,
                    tl.where(a <= 2.5, 2.0, tl.where(a < 3.5, 3.0, tl.where(a <= 5.0, 4.0, 6.0))),
                ),
            ),
        ),
    )


@triton.jit
def _nvfp4_qdq(x, block_amax, global_scale):
    """NVFP4 fake quantization of ``x`` with the scale derived from its block amax."""
    unit = tl.minimum(block_amax / (6.0 * global_scale), 448.0)
    scale = e4m3_round(unit, 448.0, 3, -6) * global_scale
    zero = scale == 0.0
    safe = tl.where(zero | (scale != scale) | (tl.abs(scale) == float("inf")), 1.0, scale)
    mag = _e2m1_magnitude(tl.abs(x) / safe) * safe
    return tl.where(zero, 0.0, tl.where(x >= 0, mag, -mag))


@triton.jit
def _gptq_nvfp4_block_kernel(
    w_ptr,
    q_ptr,
    err_ptr,
    amax_ptr,
    global_scale,
    u_ptr,
    width,
    n_amax,
    quant_block,
    block_start,
    LANES: tl.constexpr,
):
    row = tl.program_id(0)
    lanes = tl.arange(0, LANES)
    live = lanes < width
    base = row * width
    w = tl.load(w_ptr + base + lanes, mask=live, other=0.0)
    for col in range(0, width):
        block_amax = tl.load(amax_ptr + row * n_amax + (block_start + col) // quant_block)
        x = tl.sum(tl.where(lanes == col, w, 0.0))
        q = tl.sum(_nvfp4_qdq(tl.full([1], x, dtype=tl.float32), block_amax, global_scale))
        err = (x - q) / tl.load(u_ptr + col * width + col)
        tl.store(q_ptr + base + col, q)
        tl.store(err_ptr + base + col, err)
        u_row = tl.load(u_ptr + col * width + lanes, mask=live & (lanes > col), other=0.0)
        w = w - err * u_row


def gptq_nvfp4_block(
    w_block: torch.Tensor,
    block_amax: torch.Tensor,
    global_scale: float,
    u_block: torch.Tensor,
    quant_block: int,
    block_start: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GPTQ block: ``(quantized columns, errors / U[j, j])``, both ``(rows, width)`` fp32.

    ``w_block`` the block's current weights ``(rows, width)``; ``block_amax`` every block amax of
    the weight ``(rows, cin / quant_block)``; ``global_scale`` = global amax / (6 * 448), passed
    as a Python float (the kernel sees it as fp32); ``u_block`` = ``U[b0:b1, b0:b1]``;
    ``block_start`` = ``b0``, the column of the weight where the block starts.
    """
    rows, width = w_block.shape
    if u_block.shape != (width, width) or block_amax.shape[0] != rows:
        raise ValueError(
            f"gptq_nvfp4_block: shapes do not fit (weight block {tuple(w_block.shape)}, U block "
            f"{tuple(u_block.shape)}, block amax {tuple(block_amax.shape)})"
        )
    w = w_block.float().contiguous()
    q = torch.empty_like(w)
    err = torch.empty_like(w)
    if rows == 0 or width == 0:
        return q, err
    _gptq_nvfp4_block_kernel[(rows,)](
        w,
        q,
        err,
        block_amax.float().contiguous(),
        float(global_scale),
        u_block.float().contiguous(),
        width,
        block_amax.shape[1],
        quant_block,
        block_start,
        LANES=triton.next_power_of_2(width),
    )
    return q, err

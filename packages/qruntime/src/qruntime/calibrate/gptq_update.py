"""The arithmetic of GPTQ on one linear: Hessian accumulation, damped inverse, blockwise update.

Every float operation here is Model Optimizer 0.47.0's, on operands of the same shape and
layout, in its order: the Hessian update decides every number downstream, and the column loop
feeds each rounding error into the next column, so one differing bit anywhere changes the
result. What differs is only *what* is quantized per column.

Model Optimizer fake-quantizes the whole ``(cout, cin)`` working matrix once per column and
keeps one column of the result: ``cin`` full-matrix quantizations per layer. With a stored
(static) amax the fake quantization is elementwise given the amax: column ``j`` depends only on
its own values and the scales of its rows (per tensor, per output channel, or the quantization
block holding ``j``). :func:`column_quantizer` returns a function that quantizes just that
column with the same format function and the column's slice of the amax — the same elementwise
operations on the same operands, so the same bits, ``cin`` times fewer elements. Formats whose
scale depends on the values being quantized (dynamic amax, dynamic blocks, MX), or that add a
step the column cannot reproduce alone (pre-quantization scale, rotation, affine bias, real
quantization, sequential quantizers, other block layouts), get no column function and take
Model Optimizer's full-matrix path.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from qruntime.numerics.fp8 import fake_quant_e4m3
from qruntime.numerics.integer import fake_quant_int
from qruntime.numerics.nvfp4 import fake_quant_nvfp4_static
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "ColumnQuantizer",
    "blockwise_update",
    "column_quantizer",
    "hessian_inverse",
    "update_hessian",
]

#: ``quantize(x, j)``: the fake-quantized values of column ``j`` of the weight, whose current
#: values are ``x`` (shape ``(cout, 1)``), returned with the same shape.
ColumnQuantizer = Callable[[torch.Tensor, int], torch.Tensor]


def update_hessian(x: torch.Tensor, hessian: torch.Tensor, n_samples: int) -> int:
    """Fold one batch of layer inputs ``x`` (``(..., cin)``) into the running ``hessian`` in place
    and return the new token count: ``H <- H * n / (n + t) + (2 / (n + t)) * X^T X``.

    The operations are Model Optimizer's (``H *= n / (n + t)``, then the product of
    ``sqrt(2 / (n + t)) * X`` with itself, in the ``(cin, t) @ (t, cin)`` layout), so that the
    sums come out in the same bits. An empty batch (an expert no token was routed to) changes
    nothing.
    """
    flat = x.reshape(-1, x.shape[-1]).t().float()
    tokens = flat.shape[1]
    if tokens == 0:
        return n_samples
    hessian *= n_samples / (n_samples + tokens)
    n_samples += tokens
    scaled = math.sqrt(2 / n_samples) * flat
    hessian.add_((scaled @ scaled.t()).to(hessian.device))
    return n_samples


def hessian_inverse(
    hessian: torch.Tensor, weight: torch.Tensor, perc_damp: float, name: str = ""
) -> torch.Tensor:
    """The upper Cholesky factor ``U`` of the damped inverse Hessian (``(cin, cin)`` float32).

    Input columns whose weight column is all zero ("dead") get zero rows and columns in ``H``
    and a diagonal of 1; then ``H += perc_damp * mean(diag H) * I``. When ``H`` is not positive
    definite (a layer no data reached has ``H = 0``), ``U = I`` with a warning: the update then
    degenerates to rounding to nearest, as in Model Optimizer.
    """
    h = hessian.clone()
    dead = torch.nonzero(weight.eq(0).all(dim=0)).unsqueeze(-1)
    h[dead, :] = 0
    h[:, dead] = 0
    h[dead, dead] = 1
    damp = perc_damp * torch.mean(torch.diag(h))
    diagonal = torch.arange(h.shape[0], device=h.device)
    h[diagonal, diagonal] += damp
    try:
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
        return torch.linalg.cholesky(inverse, upper=True)
    except (RuntimeError, torch.linalg.LinAlgError):
        warnings.warn(
            f"gptq: the Hessian of {name or 'a layer'} is not positive definite (no calibration "
            "data reached it?); its weights are rounded to nearest (identity inverse Hessian)",
            UserWarning,
            stacklevel=3,
        )
        return torch.eye(h.shape[0], device=h.device, dtype=h.dtype)


# ------------------------------------------------------------------------------ one column
def _column_amax(q: TensorQuantizer, shape: torch.Size) -> Callable[[int], torch.Tensor] | None:
    """``amax_of(j)``: the amax that applies to column ``j`` of a ``(cout, cin)`` weight, shaped
    to broadcast against the column ``(cout, 1)``; None for a layout without one."""
    amax = q.amax
    if amax is None:
        return None
    cout, cin = shape
    spec = q.spec
    if amax.numel() == 1:
        scalar = amax.reshape(())
        return lambda j: scalar
    if spec.block_sizes is None:
        if spec.axis in (0, -2, (0,), (-2,)) and amax.numel() == cout:
            per_row = amax.reshape(cout, 1)
            return lambda j: per_row
        return None
    sizes = {k: v for k, v in spec.block_axes.items() if v is not None}
    if set(spec.block_axes) - {-1, 1} or len(sizes) != 1 or not q.is_static_block_quant:
        return None
    block = next(iter(sizes.values()))
    blocks = math.ceil(cin / block)
    if amax.numel() != cout * blocks:
        return None
    table = amax.reshape(cout, blocks)
    columns = [table[:, b : b + 1] for b in range(blocks)]
    return lambda j: columns[j // block]


def column_quantizer(q: nn.Module, shape: torch.Size) -> ColumnQuantizer | None:
    """A function quantizing one column of a ``(cout, cin)`` weight exactly as ``q`` quantizes it
    within the whole matrix (module docstring), or None where only the whole matrix can be."""
    if not isinstance(q, TensorQuantizer) or len(shape) != 2:
        return None
    spec = q.spec
    if (
        not q.is_enabled
        or not spec.fake_quant
        or q.is_dynamic
        or q.is_mx_format
        or q.uses_constant_amax
        or q.pre_quant_scale is not None
        or spec.rotate.enable
        or spec.bias is not None
    ):
        return None
    amax_of = _column_amax(q, shape)
    if amax_of is None:
        return None
    family = spec.family
    if family == "int" and isinstance(spec.num_bits, int):
        bits, unsigned, narrow = spec.num_bits, spec.unsigned, spec.narrow_range
        return lambda x, j: fake_quant_int(
            x, amax_of(j), bits, unsigned=unsigned, narrow_range=narrow
        )
    if family == "fp" and spec.num_bits == (4, 3):
        return lambda x, j: fake_quant_e4m3(x, amax_of(j))
    if family == "nvfp4" and q.is_nvfp4_static:
        # The global amax of the whole weight, never the column's own maximum.
        g = q.global_amax
        if g is None:
            g = q.amax
            assert g is not None
            g = torch.maximum(g.max().abs(), g.min().abs())
        four_over_six = bool((spec.block_sizes or {}).get("four_over_six", False))
        return lambda x, j: fake_quant_nvfp4_static(x, amax_of(j), g, four_over_six=four_over_six)
    return None


# ------------------------------------------------------------------------------ the update
def blockwise_update(
    weight: torch.Tensor,
    h_inv: torch.Tensor,
    block_size: int,
    quantize_matrix: Callable[[torch.Tensor], torch.Tensor],
    quantize_column: ColumnQuantizer | None = None,
) -> None:
    """The GPTQ column loop on the float32 ``weight`` ``(cout, cin)``, in place.

    Per block ``[b0, b1)`` of ``block_size`` columns: each column is quantized, its error
    divided by ``U[j, j]`` and spread over the rest of the block with ``U[j, j:b1]``; after the
    block, over all later columns with ``U[b0:b1, b1:]``. With ``quantize_column`` only the
    column is quantized; without, ``quantize_matrix`` quantizes the working matrix (Model
    Optimizer's way, for formats whose scales depend on the current values).
    """
    cols = weight.shape[1]
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        u_blk = h_inv[b0:b1, b0:b1]
        errors = torch.zeros_like(weight[:, b0:b1])
        if quantize_column is not None:
            work = weight[:, b0:b1].clone()
            for i in range(b1 - b0):
                w_i = work[:, i]
                q_i = quantize_column(work[:, i : i + 1], b0 + i)[:, 0]
                weight[:, b0 + i] = q_i
                err = (w_i - q_i) / u_blk[i, i]
                work[:, i:].addr_(err, u_blk[i, i:], alpha=-1)
                errors[:, i] = err
        else:
            work = weight.clone()
            for i in range(b1 - b0):
                j = b0 + i
                w_j = work[:, j]
                q_j = quantize_matrix(work)[:, j]
                weight[:, j] = q_j
                err = (w_j - q_j) / u_blk[i, i]
                work[:, j:b1].addr_(err, u_blk[i, i:], alpha=-1)
                errors[:, i] = err
        weight[:, b1:].addmm_(errors, h_inv[b0:b1, b1:], alpha=-1)

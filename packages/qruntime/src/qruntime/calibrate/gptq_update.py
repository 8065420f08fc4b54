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
    "fused_nvfp4_block",
    "fused_nvfp4_qdq",
    "fused_nvfp4_update",
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


# ------------------------------------------------------------------------------ fused: true
def _e2m1_magnitude(a: torch.Tensor) -> torch.Tensor:
    """The FP4 threshold chain of the fused kernel (``<=`` and ``<`` alternate: ties to even;
    NaN fails every test and becomes 6)."""
    out = torch.full_like(a, 6.0)
    for bound, value, inclusive in (
        (5.0, 4.0, True),
        (3.5, 3.0, False),
        (2.5, 2.0, True),
        (1.75, 1.5, False),
        (1.25, 1.0, True),
        (0.75, 0.5, False),
        (0.25, 0.0, True),
    ):
        hit = a <= bound if inclusive else a < bound
        out = torch.where(hit, torch.full_like(a, value), out)
    return out


def fused_nvfp4_qdq(x: torch.Tensor, block_amax: torch.Tensor, global_scale: float) -> torch.Tensor:
    """The fused kernel's NVFP4 fake quantization, elementwise on fp32 ``x`` and its block
    amaxes: scale ``e4m3(min(amax / (6 g), 448)) * g``; a zero scale gives 0, a non-finite one
    is replaced by 1; the magnitude rounded on the FP4 grid; the sign chosen by ``x >= 0``
    (so ``-0`` and NaN inputs take the negative branch as in the kernel)."""
    g = _f32(global_scale, x)
    unit = torch.minimum(block_amax / (_f32(6.0, x) * g), _f32(448.0, x))
    scale = unit.to(torch.float8_e4m3fn).float() * g
    zero = scale == 0.0
    safe = torch.where(zero | ~torch.isfinite(scale), torch.ones_like(scale), scale)
    mag = _e2m1_magnitude(x.abs() / safe) * safe
    out = torch.where(x >= 0, mag, -mag)
    return torch.where(zero, torch.zeros_like(out), out)


def _f32(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` as an fp32 scalar tensor: the kernel's constants and arguments are fp32."""
    return torch.tensor(value, dtype=torch.float32, device=like.device)


def fused_nvfp4_block(
    w_block: torch.Tensor,
    block_amax: torch.Tensor,
    global_scale: float,
    u_block: torch.Tensor,
    quant_block: int,
    block_start: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch reference of :func:`qruntime.kernels.gptq_fused.gptq_nvfp4_block`, same arguments
    and results: the kernel's float operations column by column, vectorized over the rows, with
    the interpreter's arithmetic (IEEE division, no FMA). The column value and its quantized
    value are read as ``v + 0`` because the kernel takes both out of a vector with a sum, which
    turns ``-0`` into ``+0`` (a small negative weight rounds to ``+0``, not ``-0``)."""
    global_scale = float(torch.tensor(global_scale, dtype=torch.float32))
    work = w_block.float().clone()
    q = torch.empty_like(work)
    err = torch.empty_like(work)
    amax = block_amax.float()
    u = u_block.float()
    for i in range(work.shape[1]):
        x = work[:, i] + 0.0
        q_i = fused_nvfp4_qdq(x, amax[:, (block_start + i) // quant_block], global_scale) + 0.0
        e_i = (x - q_i) / u[i, i]
        q[:, i] = q_i
        err[:, i] = e_i
        work[:, i + 1 :] = work[:, i + 1 :] - e_i[:, None] * u[i, i + 1 :]
    return q, err


def fused_nvfp4_update(
    weight: torch.Tensor,
    h_inv: torch.Tensor,
    block_size: int,
    block_amax: torch.Tensor,
    global_amax: torch.Tensor,
    quant_block: int,
    backend: str = "auto",
) -> None:
    """GPTQ with ``fused: true`` on the float32 ``weight`` ``(cout, cin)`` quantized as NVFP4
    static (``block_amax`` ``(cout, cin / quant_block)``), in place.

    Per block ``[b0, b1)``: the in-block column loop of the fused kernel, then the later columns
    ``W[:, b1:] -= E U[b0:b1, b1:]``. ``global_scale = global_amax / (6 * 448)`` is computed in
    double and handed over as fp32, as a Python float reaches a Triton kernel.

    Which block loop runs: ``backend="auto"`` runs the Triton kernel
    (:mod:`qruntime.kernels.gptq_fused`) for a CUDA weight when Triton imports, and the torch
    reference :func:`fused_nvfp4_block` otherwise (CPU, or no Triton) — the two agree bit for
    bit in Triton's interpreter; on a GPU the kernel follows the GPU's float operations.
    ``"triton"`` forces the kernel (a CPU weight needs ``TRITON_INTERPRET=1``), ``"torch"`` the
    reference.
    """
    from qruntime.kernels.dispatch import choose_backend

    cout, cin = weight.shape
    if quant_block < 1 or block_size % quant_block:
        raise ValueError(
            f"gptq fused: block_size ({block_size}) must be a multiple of the weight's NVFP4 "
            f"block size ({quant_block})"
        )
    if cin % quant_block or block_amax.numel() != cout * (cin // quant_block):
        raise ValueError(
            f"gptq fused: a ({cout}, {cin}) weight needs {cin // quant_block} whole NVFP4 blocks "
            f"of {quant_block} per row (got {block_amax.numel()} block amaxes)"
        )
    table = block_amax.reshape(cout, cin // quant_block).float()
    global_scale = float(global_amax.float().item()) / (6.0 * 448.0)
    if choose_backend(weight, backend) == "triton":
        from qruntime.kernels.gptq_fused import gptq_nvfp4_block as block_fn
    else:
        block_fn = fused_nvfp4_block
    for b0 in range(0, cin, block_size):
        b1 = min(b0 + block_size, cin)
        q, err = block_fn(
            weight[:, b0:b1].clone(), table, global_scale, h_inv[b0:b1, b0:b1], quant_block, b0
        )
        weight[:, b0:b1] = q
        if b1 < cin:
            weight[:, b1:].addmm_(err, h_inv[b0:b1, b1:], alpha=-1)

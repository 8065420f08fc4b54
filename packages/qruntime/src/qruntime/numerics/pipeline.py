"""``fake_quant``: the order of operations of ``TensorQuantizer.forward``.

docs/numerics.md, 'Order of operations in a quantizer':

pre_quant_scale -> rotate -> (disabled: return) -> block_sizes-to-axis -> static block reshape ->
amax (constant / given / dynamic) -> format function (with bias and STE) -> undo reshape ->
rotate back. The format function comes from the registry in :mod:`.dispatch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from qconfig.spec import QuantizerSpec, resolve_spec

from .affine import resolve_bias
from .amax import per_channel_axis, resolve_amax
from .backends import select_accelerated
from .blocks import static_block_plan
from .dispatch import FormatEntry, resolve_format
from .real_quant import real_quant_roundtrip
from .rotation import rotate
from .ste import straight_through

__all__ = ["BACKENDS", "fake_quant"]

#: Accepted ``backend`` values: "auto" = Triton kernels for CUDA tensors (qruntime.kernels).
BACKENDS = ("auto", "torch", "triton")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def _quantize_working(
    x: torch.Tensor,
    attrs: QuantizerSpec,
    entry: FormatEntry,
    amax: torch.Tensor | None,
    global_amax: torch.Tensor | None,
    bias_value: torch.Tensor | None,
    backend: str = "torch",
) -> torch.Tensor:
    """Format function + affine bias + STE on ``x`` in its working layout.

    An accelerated implementation (:mod:`.backends`, e.g. the Triton kernels of
    docs/kernels.md) replaces only the format function; amax, bias and the gradient stay here.
    """
    bias = resolve_bias(x, attrs.bias, bias_value) if entry.uses_bias else None
    clip_needed = entry.uses_amax and not (attrs.pass_through_bwd or attrs.is_mx)
    accelerated = select_accelerated(x, entry, backend) if backend != "torch" else None
    if accelerated is not None:
        # A dynamic amax is left to the implementation, which computes it in the same pass
        # where the layout allows.
        dynamic = (
            amax is None
            and bias is None
            and not attrs.use_constant_amax
            and attrs.constant_amax is None
        )
        a = resolve_amax(x, attrs, amax) if entry.uses_amax and not dynamic else None
        grad = torch.is_grad_enabled() and x.requires_grad
        with torch.no_grad():
            src = x.detach() if bias is None else x.detach() - bias
            out = accelerated(
                src, a, attrs, global_amax=global_amax, need_amax=clip_needed and grad
            )
        if out is not None:
            y, used = out
            if bias is not None:
                y = y + bias
            if not grad:
                return y
            return straight_through(
                x, lambda _: y, clip_amax=used if clip_needed else None, bias=bias
            )
    a = resolve_amax(x, attrs, amax) if entry.uses_amax else None

    def forward(t: torch.Tensor) -> torch.Tensor:
        if bias is None:
            return entry.fn(t, a, attrs, global_amax=global_amax)
        return entry.fn(t - bias, a, attrs, global_amax=global_amax) + bias

    return straight_through(x, forward, clip_amax=a if clip_needed else None, bias=bias)


def fake_quant(
    x: torch.Tensor,
    attributes: Any,
    amax: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    *,
    backend: str = "torch",
    global_amax: torch.Tensor | None = None,
    bias_value: torch.Tensor | None = None,
    pre_quant_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fake-quantize ``x`` exactly as a Model Optimizer 0.47.0 ``TensorQuantizer`` would.

    Args:
        x: input tensor (fp32, bf16, fp16; fp64 is squeezed through fp32 by INT/FP8).
        attributes: a ``QuantizerAttributeConfig``-like object or dict (missing keys take Model
            Optimizer's defaults); a list/tuple of them is a ``SequentialQuantizer``,
            applied in order with ``amax`` then being a sequence of the same length.
        amax: the stored (calibrated) amax in the working layout — scalar, per channel
            (keepdim, e.g. ``(C, 1)``) or per block (``(num_blocks, 1)``, 2-D tiles
            ``(R/b, 1, C/b, 1)``), as :func:`reduce_amax` returns it; for NVFP4 the global amax,
            for static NVFP4 the per-block amax. None: computed from ``x`` on every call.
            Ignored by MX formats and overridden by ``use_constant_amax``/``constant_amax``.
        backend: "torch" (this reference), "auto" (Triton kernels for CUDA tensors when Triton
            is installed, else this reference) or "triton" (kernels; CPU tensors only under
            ``TRITON_INTERPRET=1``). Kernels are bit-exact with this reference; a format or
            input without a kernel runs this reference (docs/kernels.md).
        global_amax: static NVFP4 only: the per-tensor amax (default ``max |amax|``).
        bias_value: the calibrated bias of a static ``bias`` attribute.
        pre_quant_scale: SmoothQuant/AWQ scale multiplied in first, with torch type promotion
            (a bf16 ``x`` times an fp32 scale returns fp32).

    With ``fake_quant=False`` the result is the real-quantization round trip (quantize, then
    dequantize). Gradients are straight-through (``pass_through_bwd``; docs/numerics.md,
    'Straight-through gradients').
    """
    _check_backend(backend)
    if isinstance(attributes, (list, tuple)):
        return _sequential(x, attributes, amax, backend, global_amax, bias_value, pre_quant_scale)
    if amax is not None and not isinstance(amax, torch.Tensor):
        amax = torch.as_tensor(amax)
    attrs = resolve_spec(attributes)
    if x.numel() == 0:
        return x
    if pre_quant_scale is not None:
        x = x * pre_quant_scale
    if attrs.rotate.enable:
        x = rotate(x, attrs.rotate)
    if not attrs.enable:
        return rotate(x, attrs.rotate) if attrs.rotate.rotate_back else x
    if not attrs.fake_quant:
        if attrs.rotate.rotate_back:
            raise ValueError("rotate_back mode is only supported with fake_quant=True.")
        return real_quant_roundtrip(x, attrs, amax, global_amax=global_amax)

    attrs = per_channel_axis(attrs, x.dim())
    entry = resolve_format(attrs)
    if attrs.is_static_block:
        plan = static_block_plan(x.shape, attrs.block_sizes or {})
        work = attrs.replace(axis=plan.axis)
        y = plan.from_blocks(
            _quantize_working(
                plan.to_blocks(x), work, entry, amax, global_amax, bias_value, backend
            )
        )
    else:
        y = _quantize_working(x, attrs, entry, amax, global_amax, bias_value, backend)
    if attrs.rotate.rotate_back:
        y = rotate(y, attrs.rotate)
    return y


def _sequential(
    x: torch.Tensor,
    attributes: Sequence[Any],
    amax: Any,
    backend: str,
    global_amax: torch.Tensor | None,
    bias_value: torch.Tensor | None,
    pre_quant_scale: torch.Tensor | None,
) -> torch.Tensor:
    """``SequentialQuantizer``: ``Q_n(...Q_1(x))``, each element with its own amax."""
    if any(v is not None for v in (global_amax, bias_value, pre_quant_scale)):
        raise ValueError(
            "global_amax/bias_value/pre_quant_scale apply to one quantizer; call fake_quant "
            "per element of a sequential quantizer to pass them"
        )
    if amax is None:
        amaxes: Sequence[Any] = [None] * len(attributes)
    elif isinstance(amax, torch.Tensor) or len(amax) != len(attributes):
        raise ValueError("a sequential quantizer needs one amax (or None) per element")
    else:
        amaxes = amax
    for attrs, a in zip(attributes, amaxes, strict=True):
        x = fake_quant(x, attrs, a, backend=backend)
    return x

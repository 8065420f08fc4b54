"""The low-rank branch SVDQuant adds to a quantized linear: ``y = QLinear(x') + (x' A^T) B^T``.

Why the branch lives on the weight quantizer, and the module keeps its class: SVDQuant moves
the largest singular directions of the (smoothed) weight out of the quantized weight into an
unquantized rank-``r`` product ``B @ A``. Model Optimizer 0.47.0 stores ``A`` (``r x cin``) and
``B`` (``cout x r``) as the weight quantizer's buffers ``_svdquant_lora_a`` and
``_svdquant_lora_b`` and swaps the linear's class for one whose forward adds the branch. Here
the converted linear's forward adds the branch whenever its weight quantizer holds both
buffers: the factors are the only state, so a model restored from a state file (which carries
them like any other quantizer buffer) computes the branch without a class to rebuild, and a
rollback that drops the buffers also drops the branch.

The forward, as Model Optimizer's: ``x' = x * pre_quant_scale`` (the input quantizer's scale,
applied once: the input quantizer scales ``x`` itself, which is the same product), the
quantized linear on ``x'`` (output quantizer included), plus ``linear(linear(x', A), B)`` in
the input's dtype, not quantized. A sequential weight or input quantizer has no branch.

Model Optimizer keeps the factors in ``state_dict`` only while the weight quantizer is a plain
quantizer: a static-block weight quantizer (INT4 blocks) has already been promoted to another
class by the time the factors are set, and the factors become plain attributes there. Their
buffers are then registered non-persistent (:func:`attach_low_rank`'s ``persistent``), so that
``state_dict`` keys are Model Optimizer's while qruntime's own state files still carry them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qruntime.quantizer import TensorQuantizer

__all__ = [
    "LORA_A",
    "LORA_B",
    "LOW_RANK_BUFFERS",
    "add_low_rank_branch",
    "as_svd_layout",
    "attach_low_rank",
    "low_rank_factors",
    "low_rank_rank",
    "promoted_weight_quantizer",
]

#: Buffer names on the weight quantizer (Model Optimizer's).
LORA_A = "_svdquant_lora_a"
LORA_B = "_svdquant_lora_b"
LOW_RANK_BUFFERS = (LORA_A, LORA_B)


def low_rank_factors(quantizer: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(A, B)`` when ``quantizer`` is a single quantizer holding both factors, else None."""
    if not isinstance(quantizer, TensorQuantizer):
        return None
    buffers = quantizer._buffers
    lora_a, lora_b = buffers.get(LORA_A), buffers.get(LORA_B)
    if lora_a is None or lora_b is None:
        return None
    return lora_a, lora_b


def low_rank_rank(quantizer: nn.Module | None) -> int | None:
    """The rank ``r`` of the branch ``quantizer`` holds (None: no branch)."""
    factors = low_rank_factors(quantizer)
    return None if factors is None else int(factors[0].shape[0])


def promoted_weight_quantizer(quantizer: TensorQuantizer) -> bool:
    """Whether Model Optimizer has promoted this calibrated weight quantizer to its static-block
    class (enabled, static blocks, an amax, an integer or NVFP4 format), which keeps the
    factors out of ``state_dict``."""
    return (
        quantizer.is_enabled
        and quantizer.is_static_block_quant
        and quantizer.amax is not None
        and (quantizer.is_nvfp4_static or isinstance(quantizer.num_bits, int))
    )


def attach_low_rank(
    quantizer: TensorQuantizer, lora_a: torch.Tensor, lora_b: torch.Tensor, *, persistent: bool
) -> None:
    """Give ``quantizer`` the factors ``A`` (``r x cin``) and ``B`` (``cout x r``), as new
    tensors (a rollback snapshot of the buffers then drops them); ``persistent`` decides
    whether they appear in ``state_dict`` (module docstring)."""
    if not isinstance(quantizer, TensorQuantizer):
        raise TypeError(f"a low-rank branch needs a single TensorQuantizer, not {quantizer!r}")
    if lora_a.dim() != 2 or lora_b.dim() != 2 or lora_a.shape[0] != lora_b.shape[1]:
        raise ValueError(
            f"low-rank factors must be A (r x cin) and B (cout x r); got A {list(lora_a.shape)} "
            f"and B {list(lora_b.shape)}"
        )
    for name, value in ((LORA_A, lora_a), (LORA_B, lora_b)):
        quantizer._buffers.pop(name, None)
        quantizer.register_buffer(name, value.detach().clone(), persistent=persistent)


def as_svd_layout(lora_a: torch.Tensor, lora_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The factors in the memory layout SVDQuant's float64 SVD leaves them in: column-major
    (``torch.linalg.svd`` returns column-major factors and the dtype cast keeps that order), or
    row-major when they were zero-padded (the rank exceeds ``min(cout, cin)``). Why: the
    matrix products of the branch round differently for the two layouts, so factors read back
    from a file (row-major) must be put back in this layout for bit-identical outputs."""
    rank, cin = lora_a.shape
    if rank > min(lora_b.shape[0], cin):
        return lora_a.contiguous(), lora_b.contiguous()
    return lora_a.t().contiguous().t(), lora_b.t().contiguous().t()


def add_low_rank_branch(module: nn.Module, input: Any, output: Any) -> Any:
    """``output`` plus the branch on ``input`` (the module's raw input) when the module's
    weight quantizer holds one; ``output`` unchanged otherwise (module docstring)."""
    modules = module._modules
    factors = low_rank_factors(modules.get("weight_quantizer"))
    input_quantizer = modules.get("input_quantizer")
    if factors is None or not isinstance(input_quantizer, TensorQuantizer):
        return output
    scale = input_quantizer.pre_quant_scale
    if scale is not None:
        input = input * scale
    lora_a, lora_b = factors
    return output + F.linear(F.linear(input, weight=lora_a), weight=lora_b)

"""Per-block input Hessians ``H_n = X_nᵀX_n / tokens`` for ``local_hessian``.

Why per block: the search weighs a weight error ``ΔW`` by how much it changes the layer output,
``E‖ΔW x‖²``; keeping only the ``block_size x block_size`` diagonal blocks of ``XᵀX`` (cin cut
into blocks, as NVFP4 cuts its scales) costs ``cin * block_size`` floats per weight and makes the
error of one quantization block depend on that block only. The accumulation and the error
formula are Model Optimizer 0.47.0's float32 operations, in its order, so the searched amaxes
agree bit for bit (the error is evaluated for a whole chunk of candidates in one ``einsum``).

:func:`capture_layer_inputs` hooks the quantized linears (``QuantModule``s with a tensor
``input_quantizer``, a ``weight_quantizer`` and a 2-D ``weight``; not embeddings) and feeds
each one's raw input — before its input quantizer — to an accumulator per weight quantizer.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from qruntime.modules.base import QuantModule, quantized_weight
from qruntime.quantizer import TensorQuantizer

__all__ = [
    "HessianAccumulator",
    "HessianError",
    "LinearInput",
    "capture_layer_inputs",
    "quantized_linears",
]


@dataclass
class HessianAccumulator:
    """``Σ XᵀX`` per cin block of one weight, allocated at the first batch (a layer that sees
    no tokens costs nothing). ``enabled`` is False when ``block_size`` does not divide cin
    (that weight then gets the plain squared error)."""

    cout: int
    cin: int
    block_size: int
    hessian: torch.Tensor | None = None
    tokens: int = 0
    _normalized: torch.Tensor | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.cin % self.block_size == 0

    @torch.no_grad()
    def accumulate(self, x: torch.Tensor) -> None:
        """Add one batch of layer inputs ``(..., cin)``."""
        if not self.enabled:
            return
        # (tokens, cin) -> (blocks, block_size, tokens) in float32, then one batched GEMM.
        xt = x.reshape(-1, self.cin).to(torch.float32).T
        xt = xt.reshape(self.cin // self.block_size, self.block_size, -1)
        batch = xt @ xt.transpose(-1, -2)
        if self.hessian is None:
            self.hessian = batch
        else:
            self.hessian += batch
        self.tokens += x.numel() // self.cin

    def normalized(self) -> torch.Tensor | None:
        """``H / tokens`` (None without tokens), computed once; the raw sum is then freed."""
        if self._normalized is None and self.hessian is not None and self.tokens:
            self._normalized = self.hessian / self.tokens
            self.hessian = None
        return self._normalized


class HessianError:
    """The local-Hessian error on a batch of candidates (a ``search.ErrorFn``).

    Per weight row, the weight error is viewed as ``(blocks, block_size)``; the loss of a block
    is ``ΔWᵀ H_n ΔW`` and every element of the block carries it (so a quantization block sums
    ``block_size`` copies: a constant factor for the argmin, kept for exactness). The search
    hands it whole weight rows: ``row_multiple`` rows of the weight view per weight row.
    """

    def __init__(self, hessian: torch.Tensor, cout: int, view_shape: tuple[int, ...]) -> None:
        blocks, block_size, _ = hessian.shape
        numel = math.prod(view_shape)
        # One Hessian block (cin == block_size) broadcasts over a padded row, as in Model
        # Optimizer's einsum; any other mismatch fails there too.
        broadcast = blocks == 1 and numel % (cout * block_size) == 0
        if numel != cout * blocks * block_size and not broadcast:
            raise ValueError(
                f"local_hessian: a weight view of shape {view_shape} does not split into "
                f"{cout} rows of {blocks} Hessian blocks of {block_size} (padded quantization "
                "blocks cannot be Hessian-weighted)"
            )
        self.hessian = hessian
        self.block_size = block_size
        # Whole weight rows per block of view rows (the view is the weight in row-major order).
        self.row_multiple = max(1, view_shape[0] // cout)

    def __call__(self, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
        bs = self.block_size
        dw = (x - xq).view(-1, self.hessian.shape[0], bs)
        loss = torch.einsum("cnb,nbd,cnd->cn", dw, self.hessian, dw).reshape(-1)
        return loss.unsqueeze(-1).expand(-1, bs).reshape(x.shape)


@dataclass(frozen=True)
class LinearInput:
    """A hooked layer: its name, its weight and its weight quantizer."""

    name: str
    module: nn.Module
    weight: torch.Tensor
    quantizer: TensorQuantizer


def quantized_linears(model: nn.Module) -> list[LinearInput]:
    """The layers whose inputs are captured: quantized linears with an enabled tensor weight
    quantizer and a 2-D weight (Model Optimizer's ``is_quantized_linear`` and its hook rule)."""
    out = []
    for name, module in model.named_modules():
        if not isinstance(module, QuantModule) or isinstance(module, nn.Embedding):
            continue
        modules = module._modules
        if not isinstance(modules.get("input_quantizer"), TensorQuantizer):
            continue
        quantizer = modules.get("weight_quantizer")
        weight = quantized_weight(module, "weight_quantizer")
        if not isinstance(quantizer, TensorQuantizer) or weight is None or weight.dim() != 2:
            continue
        if quantizer.is_enabled:
            out.append(LinearInput(name, module, weight, quantizer))
    return out


@contextlib.contextmanager
def capture_layer_inputs(
    layers: list[LinearInput], block_size: int
) -> Iterator[dict[int, HessianAccumulator]]:
    """Forward pre-hooks on ``layers`` accumulating each layer's input, keyed by
    ``id(weight quantizer)``; the hooks are removed on exit, also when the body raises."""
    accumulators: dict[int, HessianAccumulator] = {}

    def hook_for(layer: LinearInput):
        key = id(layer.quantizer)

        def hook(module: nn.Module, args: tuple) -> None:
            if not args:
                return
            acc = accumulators.get(key)
            if acc is None:
                cout, cin = layer.weight.shape
                acc = accumulators[key] = HessianAccumulator(cout, cin, block_size)
            acc.accumulate(args[0])

        return hook

    handles = [layer.module.register_forward_pre_hook(hook_for(layer)) for layer in layers]
    try:
        yield accumulators
    finally:
        for handle in handles:
            handle.remove()

"""Sparse MoE blocks after statistics collection: the experts share one input amax.

Model Optimizer gives every expert of a sparse MoE block (the blocks :mod:`qruntime.sites.moe`
detects) the element-wise max of the experts' input amaxes, and with ``sync_expert_weight_amax``
their weight amaxes too. Experts that saw no tokens get the shared value as well, so an expert
the calibration data never routed to is still calibrated (docs/model-optimizer-rules.md, "MoE
expert amax sharing").
"""

from __future__ import annotations

import torch
from torch import nn

from qruntime.quantizer import TensorQuantizer
from qruntime.sites.moe import moe_blocks

__all__ = ["sync_expert_amax", "sync_moe_experts"]


@torch.no_grad()
def sync_expert_amax(block: nn.Module, sync_weight_amax: bool = False) -> None:
    """Give every expert of ``block`` the element-wise max of the experts' input amaxes.

    Quantizers are matched by their name inside the expert; experts whose quantizer saw no
    tokens get the shared value too. Weight amaxes are shared only with ``sync_weight_amax``.
    """
    shared: dict[str, torch.Tensor] = {}
    experts = list(block.experts)  # type: ignore[arg-type]
    for expert in experts:
        for name, q in expert.named_modules():
            if not isinstance(q, TensorQuantizer) or q.amax is None:
                continue
            if "input_quantizer" in name or (sync_weight_amax and "weight_quantizer" in name):
                value = q.amax.detach()
                shared[name] = value if name not in shared else torch.maximum(shared[name], value)
    for expert in experts:
        for name, q in expert.named_modules():
            if isinstance(q, TensorQuantizer) and name in shared:
                q.amax = shared[name]


def sync_moe_experts(model: nn.Module, sync_weight_amax: bool = False) -> None:
    """:func:`sync_expert_amax` for every sparse MoE block of ``model``."""
    for block in moe_blocks(model):
        sync_expert_amax(block, sync_weight_amax)

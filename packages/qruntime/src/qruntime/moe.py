"""Sparse MoE blocks: the expert amax sync after max calibration.

Model Optimizer gives every expert of a sparse MoE block (detected by
:mod:`qruntime.sites.moe`) one shared input amax — the element-wise max over the experts (weights
too with ``sync_expert_weight_amax``). ``moe_blocks`` is re-exported here until the calibration
code imports it from :mod:`qruntime.sites.moe`.
"""

from __future__ import annotations

import torch
from torch import nn

from qruntime.quantizer import TensorQuantizer
from qruntime.sites.moe import moe_blocks

__all__ = ["moe_blocks", "sync_expert_amax"]


@torch.no_grad()
def sync_expert_amax(block: nn.Module, sync_weight_amax: bool = False) -> None:
    """Give every expert the element-wise max of the experts' input amaxes (``sync_moe_expert_amax``).

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

"""Sparse MoE blocks: Model Optimizer's on-the-fly ``hf.<Class>`` registration and expert amax sync.

When the ``transformers`` package is importable, Model Optimizer 0.47.0 registers, at conversion
time, every module that *looks like* a sequential sparse MoE block (``register_sparse_moe_on_the_fly``
in its Hugging Face plugin; calibration.md §1.3 step 5): an iterable ``experts`` plus either a
``gate`` with ``top_k`` and ``num_experts``/``n_routed_experts``, or ``top_k`` on the block itself
(with ``num_experts``/``n_routed_experts``, or an ``experts`` with a length). The block gets the
key ``hf.<ClassName>`` and no quantizers, and after max calibration every expert's input
quantizers share one amax: the element-wise max over the experts (weights too with
``sync_expert_weight_amax``). This applies to any such module, Hugging Face or not — e.g. the
test zoo's ``SparseMoe`` — so qruntime applies the same rule under the same condition, and
results stay equal to Model Optimizer's with and without ``transformers`` installed.
"""

from __future__ import annotations

import importlib.util
from functools import cache

import torch
from torch import nn

from qruntime.quantizer import TensorQuantizer, is_quantizer

__all__ = ["moe_blocks", "moe_plugin_active", "sparse_moe_key", "sync_expert_amax"]


@cache
def moe_plugin_active() -> bool:
    """Whether Model Optimizer would load its Hugging Face plugin (``transformers`` importable)."""
    return importlib.util.find_spec("transformers") is not None


def _has_num_experts(obj: object) -> bool:
    return hasattr(obj, "num_experts") or hasattr(obj, "n_routed_experts")


def is_sparse_moe_block(module: nn.Module) -> bool:
    """The structural test of ``_is_sparse_sequaential_moe_block`` (without its side effect of
    setting ``num_experts`` on the block)."""
    if is_quantizer(module):
        return False
    experts = getattr(module, "experts", None)
    if experts is None or not hasattr(experts, "__iter__"):
        return False
    gate = getattr(module, "gate", None)
    if gate is not None and hasattr(gate, "top_k") and _has_num_experts(gate):
        return True
    if hasattr(module, "top_k"):
        return _has_num_experts(module) or hasattr(experts, "__len__")
    return False


def sparse_moe_key(module: nn.Module) -> str:
    return f"hf.{type(module).__name__}"


def moe_blocks(model: nn.Module) -> list[nn.Module]:
    """The sparse MoE blocks Model Optimizer would register (empty without ``transformers``)."""
    if not moe_plugin_active():
        return []
    return [m for m in model.modules() if is_sparse_moe_block(m)]


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

"""Sparse MoE blocks: Model Optimizer's on-the-fly ``hf.<Class>`` registration (detection only).

When the ``transformers`` package is importable, Model Optimizer 0.47.0 registers, at conversion
time, every module that *looks like* a sequential sparse MoE block (docs/differences.md, the
notes below the table): an iterable ``experts`` plus either a ``gate`` with ``top_k`` and
``num_experts``/``n_routed_experts``, or ``top_k`` on the block itself (with
``num_experts``/``n_routed_experts``, or an ``experts`` with a length). The block gets the key
``hf.<ClassName>`` and no quantizers; max calibration later syncs its experts' amaxes. This
applies to any such module, Hugging Face or not — e.g. the test zoo's ``SparseMoe`` — so qruntime
applies the same rule under the same condition, and results stay equal to Model Optimizer's with
and without ``transformers`` installed.

:class:`SparseMoeProvider` contributes the keys (no sites: the blocks get no quantizers, their
experts are ordinary sites of other providers); the condition is decided inside it, so that
``inventory`` has no special case for MoE.
"""

from __future__ import annotations

import importlib.util
from functools import cache

from torch import nn

from qruntime.quantizer import is_quantizer
from qruntime.sites.base import NamedModules, Site

__all__ = [
    "SparseMoeProvider",
    "is_sparse_moe_block",
    "moe_blocks",
    "moe_plugin_active",
    "sparse_moe_key",
]


@cache
def moe_plugin_active() -> bool:
    """Whether Model Optimizer would load its Hugging Face plugin (``transformers`` importable)."""
    return importlib.util.find_spec("transformers") is not None


def _has_num_experts(obj: object) -> bool:
    return hasattr(obj, "num_experts") or hasattr(obj, "n_routed_experts")


def is_sparse_moe_block(module: nn.Module) -> bool:
    """Model Optimizer's structural test for a sequential sparse MoE block, without its side
    effect of setting ``num_experts`` on the block (qruntime never mutates a model it inspects)."""
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
    """The registry key Model Optimizer gives a sparse MoE block: ``hf.<ClassName>``."""
    return f"hf.{type(module).__name__}"


def moe_blocks(model: nn.Module) -> list[nn.Module]:
    """The sparse MoE blocks Model Optimizer would register (empty without ``transformers``)."""
    if not moe_plugin_active():
        return []
    return [m for m in model.modules() if is_sparse_moe_block(m)]


class SparseMoeProvider:
    """Registry keys ``hf.<Class>`` for the model's sparse MoE blocks, when Model Optimizer would
    register them; no sites."""

    name = "sparse-moe"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        return []

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        if not moe_plugin_active():
            return []
        return [sparse_moe_key(m) for _, m in modules if is_sparse_moe_block(m)]

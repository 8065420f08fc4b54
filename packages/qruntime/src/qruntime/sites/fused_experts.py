"""The fused-experts site provider: 3-D expert containers get per-expert quantizers.

Model Optimizer 0.47.0, whenever its Hugging Face plugin loads (``transformers`` importable),
registers at conversion time every module that *looks like* a fused experts container —
``num_experts``, a 3-D ``down_proj`` and a 3-D ``gate_up_proj`` (or, non-gated, a 3-D
``up_proj`` without ``gate_proj``/``gate_up_proj``) — under the key ``hf.<ClassName>``, Hugging
Face root model or not. qruntime applies the same test under the same condition
(:func:`qruntime.modules.fused_experts.fused_experts_kind`); classes the module-type registry
converts (an explicit ``qruntime.register``) are claimed by that earlier provider first.

``parent_class: hf.<Class>`` selects only the two shared input quantizers: a per-expert weight
quantizer's parent is its ``nn.ModuleList``, not the experts module (as in Model Optimizer).
"""

from __future__ import annotations

from torch import nn

from qruntime.modules.convert import original_class
from qruntime.modules.fused_experts import fused_experts_kind
from qruntime.sites.base import NamedModules, Site
from qruntime.sites.moe import moe_plugin_active

__all__ = ["FusedExpertsProvider", "fused_experts_key"]


def fused_experts_key(cls: type[nn.Module]) -> str:
    """The registry key Model Optimizer gives a fused experts class: ``hf.<ClassName>``."""
    return f"hf.{cls.__name__}"


class FusedExpertsProvider:
    """Sites of every fused experts container; keys ``hf.<Class>`` of those the model has."""

    name = "fused-experts"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        if not moe_plugin_active():
            return []
        out = []
        for name, module in modules:
            mixin = fused_experts_kind(module)
            if mixin is None:
                continue
            cls = original_class(module)
            key = fused_experts_key(cls)
            out.append(
                Site(
                    name=name,
                    module=module,
                    class_name=cls.__name__,
                    registry_key=key,
                    quant_cls=mixin,
                    slots=tuple(mixin.quantizer_slots(module)),
                    parent_class_keys=(key,),
                    subclass_of=(key,),
                )
            )
        return out

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        if not moe_plugin_active():
            return []
        return [fused_experts_key(original_class(m)) for _, m in modules if fused_experts_kind(m)]

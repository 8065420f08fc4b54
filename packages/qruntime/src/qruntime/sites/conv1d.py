"""The hf-conv1d site provider: GPT-2's ``Conv1D`` modules, converted as linears.

Model Optimizer 0.47.0 registers ``transformers.pytorch_utils.Conv1D`` under the key
``"Conv1D"`` when its Hugging Face plugin loads (``transformers`` importable), and converts each
one into its ``nn.Linear`` quant class after transposing the weight
(:mod:`qruntime.modules.conv1d`). The converted module therefore reports the registry key
``"nn.Linear"`` (what a plan's ``parent_class`` says for its quantizers) and ``parent_class:
nn.Linear`` selects it.

One deliberate difference: in Model Optimizer ``parent_class: Conv1D`` is a valid key that
selects nothing (the converted module is no longer an instance of the Conv1D quant class).
Here it selects the converted ``Conv1D`` modules, which is what the key names; the stock
configs never use it, so their plans are unchanged.

Subclasses follow the registry's rule: a subclass that keeps ``Conv1D.forward`` is converted
the same way, one that overrides it is left alone (``parent_class: Conv1D`` selects only
modules whose class is ``Conv1D`` itself).
"""

from __future__ import annotations

import sys

from torch import nn

from qruntime.modules.base import register_transposed_weight
from qruntime.modules.conv1d import QuantConv1D
from qruntime.modules.convert import original_class
from qruntime.sites.base import NamedModules, Site
from qruntime.sites.moe import moe_plugin_active

__all__ = ["CONV1D_KEY", "Conv1DProvider", "conv1d_class"]

#: The registry key Model Optimizer registers ``Conv1D`` under (no ``hf.`` prefix).
CONV1D_KEY = "Conv1D"
#: The key the converted modules report: they are quantized ``nn.Linear``s.
LINEAR_KEY = "nn.Linear"


def conv1d_class() -> type[nn.Module] | None:
    """``transformers.pytorch_utils.Conv1D`` if that module is loaded (never imports it: a model
    holding a Conv1D can only exist once it has been imported)."""
    module = sys.modules.get("transformers.pytorch_utils")
    cls = getattr(module, "Conv1D", None) if module is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


class Conv1DProvider:
    """Sites of every ``Conv1D`` (or subclass keeping its forward); key ``"Conv1D"`` whenever
    Model Optimizer would have registered it."""

    name = "hf-conv1d"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        base = conv1d_class()
        if base is None:
            return []
        out = []
        for name, module in modules:
            cls = original_class(module)
            if not issubclass(cls, base) or cls.forward is not base.forward:
                continue
            # plan and state-file checks must see the [out, in] weight before conversion
            register_transposed_weight(cls)
            shape, dtype = QuantConv1D.reported_weight(module)
            exact = cls is base
            out.append(
                Site(
                    name=name,
                    module=module,
                    class_name=cls.__name__,
                    registry_key=LINEAR_KEY,
                    quant_cls=QuantConv1D,
                    slots=tuple(QuantConv1D.quantizer_slots(module)),
                    parent_class_keys=(LINEAR_KEY, CONV1D_KEY) if exact else (LINEAR_KEY,),
                    subclass_of=(CONV1D_KEY,),
                    weight_shape=shape,
                    weight_dtype=dtype,
                )
            )
        return out

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        return [CONV1D_KEY] if moe_plugin_active() else []

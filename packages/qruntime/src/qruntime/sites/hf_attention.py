"""Hugging Face attention modules: Model Optimizer's on-the-fly KV-cache registration.

Model Optimizer 0.47.0, at conversion time and only when the root is a ``transformers``
``PreTrainedModel``, walks the modules in ``named_modules`` order and registers (under the bare
class name) every class that

* has a name ending with ``Attention``, on a module none of whose descendants has such a name
  (``BertAttention`` wraps ``BertSelfAttention``: only the inner one counts), and
* is defined in a Python module with a global ``ALL_ATTENTION_FUNCTIONS`` (the attention-kernel
  interface; T5 uses it too in transformers 5.x),

unless the class is already converted by a registration (its own or a base class's with the same
``forward``: the registry's subclass rule). Each such module gets ``q/k/v/p_bmm_quantizer``
after its existing children (:class:`qruntime.modules.attention.QuantAttention`).

What qruntime does differently (docs/differences.md): the registration is not sticky — a plain
``nn.Module`` that contains a ``LlamaAttention`` gets nothing, in every process, as in a fresh
Model Optimizer process — and a class without the interface ("legacy" attention, e.g.
``GPTNeoSelfAttention``) gets no quantizers and a warning, instead of Model Optimizer's
source rewrite that labels the operands by walk order.
"""

from __future__ import annotations

import sys
import warnings

from torch import nn

from qruntime.modules.attention import QuantAttention
from qruntime.modules.convert import original_class
from qruntime.sites.base import NamedModules, Site
from qruntime.sites.hf import is_pretrained_model
from qruntime.sites.registry import lookup

__all__ = ["HFAttentionProvider", "attention_classes", "uses_attention_interface"]

SUFFIX = "Attention"


def uses_attention_interface(cls: type[nn.Module]) -> bool:
    """Whether the module defining ``cls`` has an ``ALL_ATTENTION_FUNCTIONS`` global (Model
    Optimizer's compatibility probe)."""
    defining = sys.modules.get(cls.__module__)
    return getattr(defining, "ALL_ATTENTION_FUNCTIONS", None) is not None


def _wraps_attention(module: nn.Module) -> bool:
    return any(
        child is not module and original_class(child).__name__.endswith(SUFFIX)
        for child in module.modules()
    )


def attention_classes(modules: NamedModules) -> tuple[list[type[nn.Module]], list[type[nn.Module]]]:
    """``(registered, legacy)``: the attention classes Model Optimizer would register, in
    registration order, and those it would hand to its source-rewriting fallback."""
    registered: list[type[nn.Module]] = []
    legacy: list[type[nn.Module]] = []
    for _, module in modules:
        cls = original_class(module)
        if not cls.__name__.endswith(SUFFIX) or _wraps_attention(module):
            continue
        if lookup(cls) is not None or _registration(cls, registered) is not None:
            continue
        if cls in legacy:
            continue
        (registered if uses_attention_interface(cls) else legacy).append(cls)
    return registered, legacy


def _registration(
    cls: type[nn.Module], registered: list[type[nn.Module]]
) -> type[nn.Module] | None:
    """The first registered class that converts ``cls`` (itself, or a base with the same
    ``forward``)."""
    for base in registered:
        if issubclass(cls, base) and cls.forward is base.forward:
            return base
    return None


class HFAttentionProvider:
    """Sites ``q/k/v/p_bmm_quantizer`` on the attention modules of a ``PreTrainedModel``; keys:
    the bare names of the attention classes registered for it."""

    name = "hf-attention"

    def sites(self, model: nn.Module, modules: NamedModules) -> list[Site]:
        if not is_pretrained_model(model):
            return []
        registered, legacy = attention_classes(modules)
        if legacy:
            names = ", ".join(sorted(cls.__name__ for cls in legacy))
            warnings.warn(
                f"qruntime: attention classes {names} do not use the transformers attention "
                "interface (ALL_ATTENTION_FUNCTIONS) and get no q/k/v/p_bmm_quantizer "
                "(KV-cache quantization); register a quant mixin for them to quantize their "
                "matmul operands (docs/huggingface.md)",
                stacklevel=2,
            )
        out = []
        for name, module in modules:
            # conversion is by class, as the registry's: every module of a registered class (or
            # of a subclass sharing its forward) is converted, wrapper or not
            cls = original_class(module)
            base = _registration(cls, registered)
            if base is None:
                continue
            out.append(
                Site(
                    name=name,
                    module=module,
                    class_name=cls.__name__,
                    registry_key=base.__name__,
                    quant_cls=QuantAttention,
                    slots=tuple(QuantAttention.quantizer_slots(module)),
                    # a subclass converted by its base's registration gets a class of its own,
                    # which the base's key never matches (the registry's subclass rule)
                    parent_class_keys=(base.__name__,) if base is cls else (),
                    subclass_of=tuple(r.__name__ for r in registered if issubclass(cls, r)),
                )
            )
        return out

    def registry_keys(self, model: nn.Module, modules: NamedModules) -> list[str]:
        if not is_pretrained_model(model):
            return []
        return [cls.__name__ for cls in attention_classes(modules)[0]]

"""What every Hugging Face site provider asks first: is transformers loaded, is this an HF model.

Why a module of its own: the providers must never import transformers themselves (qruntime does
not depend on it, and importing it costs seconds), so they look at ``sys.modules``. A model built
from transformers classes can only exist once transformers has been imported, so "not loaded"
means "no Hugging Face module here" without any import.
"""

from __future__ import annotations

import sys
from types import ModuleType

from torch import nn

__all__ = ["is_pretrained_model", "loaded_transformers"]


def loaded_transformers() -> ModuleType | None:
    """The ``transformers`` module if this process has imported it, else None (never imports)."""
    return sys.modules.get("transformers")


def is_pretrained_model(model: nn.Module) -> bool:
    """Whether ``model`` is a ``transformers.PreTrainedModel`` (the root test of Model
    Optimizer's attention plugin); False when transformers is not loaded."""
    transformers = loaded_transformers()
    if transformers is None:
        return False
    modeling = sys.modules.get("transformers.modeling_utils")
    base = getattr(modeling, "PreTrainedModel", None) if modeling is not None else None
    return base is not None and isinstance(model, base)

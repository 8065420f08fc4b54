"""Tensor names of the original Hugging Face hub checkpoint for a model whose experts
``transformers`` fused on load.

Why: ``transformers`` 5 renames and merges some checkpoints while loading them (Mixtral's
``block_sparse_moe.experts.<e>.w1/w2/w3`` become ``mlp.experts.gate_up_proj``/``down_proj``);
an inference engine reads a quantized checkpoint under the hub names, one linear per expert,
and Model Optimizer's exporter writes those names. We invert the model type's registered
conversion: each plain renaming backwards, and the per-expert leaves (``gate_proj``,
``up_proj``, ``down_proj``) to the leaf names the merged tensors came from. A conversion that
is not a plain renaming or an expert merge is not inverted: the in-memory names are kept, with
a warning (Model Optimizer does the same).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

__all__ = ["hub_namer"]

_LITERAL = re.compile(r"^[\w.]+$")
_EXPERT_SOURCE = re.compile(r"experts\.\*\.(\w+)\.weight$")
_EXPERT_KEY = re.compile(r"(\.experts\.\d+\.)(gate_proj|up_proj|down_proj)(?=\.|$)")


def _unescape(pattern: str) -> str | None:
    text = pattern.replace("\\.", ".")
    return text if _LITERAL.match(text) else None


def _rules(model_type: str) -> tuple[list[tuple[str, str]], dict[str, str]] | None:
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    renames: list[tuple[str, str]] = []
    leaves: dict[str, str] = {}
    for rule in get_checkpoint_conversion_mapping(model_type) or []:
        sources, targets = list(rule.source_patterns), list(rule.target_patterns)
        if type(rule).__name__ == "WeightRenaming" and len(sources) == len(targets) == 1:
            src, dst = _unescape(sources[0]), _unescape(targets[0])
            if src is None or dst is None:
                return None
            renames.append((dst, src))
            continue
        if type(rule).__name__ == "WeightConverter" and len(targets) == 1:
            found = [_EXPERT_SOURCE.search(s) for s in sources]
            if any(m is None for m in found):
                return None
            names = [m.group(1) for m in found if m is not None]
            if targets[0].endswith("experts.gate_up_proj") and len(names) == 2:
                leaves.update(gate_proj=names[0], up_proj=names[1])
                continue
            if targets[0].endswith("experts.down_proj") and len(names) == 1:
                leaves["down_proj"] = names[0]
                continue
        return None
    return renames[::-1], leaves


def hub_namer(model_type: str | None) -> Callable[[str], str]:
    """A function from in-memory (per-expert split) names to the hub checkpoint's names."""
    rules = _rules(model_type) if model_type else ([], {})
    if rules is None:
        warnings.warn(
            f"the {model_type} weight conversion of transformers is not a plain renaming or "
            "expert merge: tensors keep their in-memory names, which the original hub "
            "checkpoint may not use",
            UserWarning,
            stacklevel=3,
        )
        rules = ([], {})
    renames, leaves = rules

    def name(key: str) -> str:
        key = _EXPERT_KEY.sub(lambda m: m.group(1) + leaves.get(m.group(2), m.group(2)), key)
        for dst, src in renames:
            key = key.replace(dst, src)
        return key

    return name

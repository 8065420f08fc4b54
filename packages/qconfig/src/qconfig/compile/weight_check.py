"""Model Optimizer 0.47.0's post-application weight check, as a compile error (QC102).

docs/model-optimizer-rules.md, 'Weight-quantization check': a config that asks for weight
quantization must leave at least one weight quantizer enabled; the check keys entries by
``quantizer_name`` only, quirks included. The caller decides whether it runs (``weight_check``).
"""

from collections.abc import Mapping
from fnmatch import fnmatchcase

from qconfig.compile.errors import CompileError
from qconfig.entries import QuantizerCfgEntry
from qconfig.errors import Diagnostic
from qconfig.plan import QuantizerPlan

__all__ = [
    "any_weight_quantizer_enabled",
    "check_weights",
    "weight_request_patterns",
]


def weight_request_patterns(entries: list[QuantizerCfgEntry]) -> list[str]:
    """0.47.0's notion of "the config asks for weight quantization", quirks included:
    entries keyed by ``quantizer_name`` only (``parent_class`` ignored), last one wins."""
    last = {e.quantizer_name: e for e in entries}
    return [
        pattern
        for pattern, e in last.items()
        if e.enable and ("weight_quantizer" in pattern or fnmatchcase("weight_quantizer", pattern))
    ]


def any_weight_quantizer_enabled(quantizers: Mapping[str, QuantizerPlan]) -> bool:
    for name, q in quantizers.items():
        if "weight_quantizer" not in name:
            continue
        if q.enable:
            return True
    return False


def check_weights(entries: list[QuantizerCfgEntry], quantizers: dict[str, QuantizerPlan]) -> None:
    patterns = weight_request_patterns(entries)
    if patterns and not any_weight_quantizer_enabled(quantizers):
        raise CompileError(
            [
                Diagnostic(
                    "QC102",
                    "error",
                    "The quantization config asks for weight quantization but no weight "
                    "quantizer is enabled, so nothing would be quantized. These patterns asked "
                    f"for it: {patterns}",
                    path="quant_cfg",
                )
            ]
        )

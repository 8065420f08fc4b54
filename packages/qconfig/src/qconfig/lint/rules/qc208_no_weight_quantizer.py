"""QC208: no weight quantizer ends enabled.

Model Optimizer 0.47.0's own check (compile error QC102) keys entries by ``quantizer_name``
only, so a later entry with the same pattern but another ``parent_class`` hides the request
(docs/model-optimizer-rules.md, 'Weight-quantization check'). This rule keys them by (pattern, parent_class) and also fires when
nothing asked for weights at all.
"""

from fnmatch import fnmatchcase

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule("QC208", "warning", "no weight quantizer is enabled", needs_manifest=True)
def check(ctx: LintContext):
    from qconfig.compile import any_weight_quantizer_enabled  # only with a manifest

    result = ctx.compiled
    if any_weight_quantizer_enabled(result.plan.quantizers):
        return
    last = {(e.quantizer_name, e.parent_class): e for e in result.entries}
    asked = [
        f"{name!r}" + (f" (parent_class {parent!r})" if parent else "")
        for (name, parent), e in last.items()
        if e.enable and ("weight_quantizer" in name or fnmatchcase("weight_quantizer", name))
    ]
    detail = f"; these entries asked for it: {', '.join(asked)}" if asked else ""
    yield Finding(
        f"no weight quantizer of {ctx.manifest.model or 'the model'} is enabled, so no weight "
        f"would be quantized{detail}",
        (*ctx.raw_path, "quant_cfg"),
    )

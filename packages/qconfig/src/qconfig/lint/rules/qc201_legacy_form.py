"""QC201: a legacy ``quant_cfg`` form (flat dict, ``{pattern: cfg}``, ``{"nn.X": {...}}``)."""

from collections.abc import Mapping

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule(
    "QC201",
    "warning",
    "legacy quant_cfg form; `qconfig migrate` rewrites it as list entries",
    fixable=True,
)
def check(ctx: LintContext):
    if isinstance(ctx.raw.get("quant_cfg"), Mapping):
        yield Finding(
            "quant_cfg is a legacy flat dict (deprecated since Model Optimizer 0.44); "
            "`qconfig migrate --write` converts it to the list form",
            (*ctx.raw_path, "quant_cfg"),
        )
        return
    seen = set()
    for expanded in ctx.expanded:
        if not expanded.legacy or expanded.source[:1] in seen:
            continue
        seen.add(expanded.source[:1])
        yield Finding(
            "legacy single-key entry; write it as {quantizer_name: ..., cfg: ..., enable: ...} "
            "(`qconfig migrate --write` does it)",
            (*ctx.raw_path, "quant_cfg", *expanded.source[:1]),
        )

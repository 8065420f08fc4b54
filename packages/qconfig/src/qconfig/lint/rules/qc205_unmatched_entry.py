"""QC205: an entry that selects no quantizer of the model (often a typo or a wrong anchor).

A warning for entries that configure or enable quantizers (the silent failure behind an
unquantized checkpoint); only ``info`` for pure exclusions (``enable: false`` without ``cfg``),
since presets carry model-agnostic exclusions (routers, vision towers) that most models lack.
"""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule("QC205", "warning", "entry matches no quantizer of the model", needs_manifest=True)
def check(ctx: LintContext):
    result = ctx.compiled
    for index, count in enumerate(result.matched_count):
        if count:
            continue
        entry = result.entries[index]
        scope = f" under parent_class {entry.parent_class!r}" if entry.parent_class else ""
        exclusion = entry.cfg is None and not entry.enable
        yield Finding(
            f"{entry.quantizer_name!r} matches no quantizer{scope} of "
            f"{ctx.manifest.model or 'the model'}",
            ctx.entry_path(index),
            severity="info" if exclusion else None,
        )

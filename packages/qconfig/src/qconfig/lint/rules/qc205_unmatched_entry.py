"""QC205: an entry that selects no quantizer of the model (often a typo or a wrong anchor)."""

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
        yield Finding(
            f"{entry.quantizer_name!r} matches no quantizer{scope} of "
            f"{ctx.manifest.model or 'the model'}",
            ctx.entry_path(index),
        )

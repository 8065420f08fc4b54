"""QC206: an entry whose every effect is overwritten by later entries."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule(
    "QC206",
    "warning",
    "entry has no effect: later entries override all it sets",
    needs_manifest=True,
)
def check(ctx: LintContext):
    result = ctx.compiled
    for index, (count, live) in enumerate(zip(result.matched_count, result.live, strict=True)):
        if count and not live:
            entry = result.entries[index]
            yield Finding(
                f"{entry.quantizer_name!r} matches {count} quantizer(s) but later entries "
                "override everything it sets on them",
                ctx.entry_path(index),
            )

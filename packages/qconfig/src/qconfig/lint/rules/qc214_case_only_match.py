"""QC214: a pattern that matches a real quantizer name only when case is ignored.

Model Optimizer matches case-insensitively on Windows only; qconfig never does, so such an
entry silently does nothing on Linux. Only entries that match nothing are examined: that is
where a case slip hides.
"""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule("QC214", "warning", "pattern matches only when case is ignored", needs_manifest=True)
def check(ctx: LintContext):
    from qconfig.matching import matches  # needs a manifest: lint without one never imports it

    lowered_names = None
    for index, entry in enumerate(ctx.compiled.entries):
        if ctx.compiled.matched_count[index]:
            continue
        if lowered_names is None:
            lowered_names = [(n.lower(), n) for n in ctx.manifest.quantizer_names()]
        pattern = entry.quantizer_name.lower()
        hit = next(
            (
                n
                for low, n in lowered_names
                if matches(pattern, low) and not matches(entry.quantizer_name, n)
            ),
            None,
        )
        if hit:
            yield Finding(
                f"{entry.quantizer_name!r} matches {hit} only when case is ignored; matching "
                "is case-sensitive (Model Optimizer ignores case on Windows only)",
                (*ctx.entry_path(index), "quantizer_name"),
            )

"""QC211: ``parent_class`` is an exact class test, so subclasses of the named class (converted
under their own class) are not selected although the pattern matches them (docs/model-optimizer-rules.md, 'Module conversion and the registry')."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule(
    "QC211",
    "warning",
    "parent_class misses subclasses of the named class",
    needs_manifest=True,
)
def check(ctx: LintContext):
    from qconfig.matching import matches  # needs a manifest: lint without one never imports it

    for index, entry in enumerate(ctx.compiled.entries):
        key = entry.parent_class
        if not key:
            continue
        missed = [
            name
            for name, module, site in ctx.manifest.iter_sites()
            if key in module.subclass_of
            and key not in module.parent_class_keys
            and "." not in site.attribute
            and matches(entry.quantizer_name, name)
        ]
        if missed:
            yield Finding(
                f"parent_class {key!r} does not select {len(missed)} quantizer(s) of subclasses "
                f"of {key} that the pattern matches, e.g. {missed[0]}; add an entry for the "
                "subclass key or drop parent_class",
                (*ctx.entry_path(index), "parent_class"),
            )

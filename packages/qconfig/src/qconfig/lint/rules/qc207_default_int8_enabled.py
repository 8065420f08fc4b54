"""QC207: an enable-only ``true`` switches on quantizers no ``cfg`` entry configured, so they run
with their module default (INT8) — rarely what a W4/FP8/NVFP4 config means."""

from collections import defaultdict

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule(
    "QC207",
    "warning",
    "enable-only true turns on quantizers that keep their module-default format",
    needs_manifest=True,
)
def check(ctx: LintContext):
    from qconfig.plan import describe_format  # only with a manifest: keeps `lint` start lean

    result = ctx.compiled
    hits: dict[int, list[str]] = defaultdict(list)
    for name, elements in result.element_sources.items():
        plan = result.plan.quantizers[name]
        if not plan.enable or plan.is_sequential:
            continue
        attrs_src, enable_src = elements[0]
        if attrs_src is None and enable_src is not None and result.entries[enable_src].enable:
            hits[enable_src].append(name)
    for index, names in hits.items():
        fmt = describe_format(result.plan.quantizers[names[0]].attributes)
        yield Finding(
            f"enables {len(names)} quantizer(s) that no cfg entry configured, so they use "
            f"their module default ({fmt}), e.g. {names[0]}",
            ctx.entry_path(index),
        )

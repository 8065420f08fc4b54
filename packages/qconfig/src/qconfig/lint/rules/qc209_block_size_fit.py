"""QC209 / QC210: a weight block size that does not divide the weight dimension (the last block
is padded, and exporters reject it) or that exceeds it."""

from collections import defaultdict

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import RULES, Rule, rule


def _misfits(ctx: LintContext):
    result = ctx.compiled
    shapes = {}
    for name, module, _site in ctx.manifest.iter_sites():
        if module.weight_shape and name.endswith("weight_quantizer"):
            shapes[name] = module.weight_shape
    for name, shape in shapes.items():
        plan = result.plan.quantizers[name]
        if not plan.enable:
            continue
        elements = plan.attributes if plan.is_sequential else (plan.attributes,)
        for k, attrs in enumerate(elements):
            if not attrs.enable or not attrs.block_sizes:
                continue
            for axis, size in attrs.block_sizes.items():
                if (
                    not isinstance(axis, int)
                    or not isinstance(size, int)
                    or size < 1  # rejected by validation; never divide by it here
                    or not -len(shape) <= axis < len(shape)  # QC104
                ):
                    continue
                dim = shape[axis]
                source = result.element_sources[name][k][0]
                if size > dim:
                    yield (
                        "QC210",
                        source,
                        name,
                        f"block size {size} exceeds dimension {axis} ({dim})",
                    )
                elif dim % size:
                    yield (
                        "QC209",
                        source,
                        name,
                        (
                            f"block size {size} does not divide dimension {axis} ({dim}); "
                            f"the last block is padded"
                        ),
                    )


def _grouped(ctx: LintContext, code: str):
    groups = defaultdict(list)
    for found_code, source, name, why in _misfits(ctx):
        if found_code == code and source is not None:
            groups[(source, why.split(";")[0])].append((name, why))
    for (source, _), rows in groups.items():
        name, why = rows[0]
        more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
        yield Finding(f"{name}: {why}{more}", (*ctx.entry_path(source), "cfg"))


@rule(
    "QC209",
    "warning",
    "weight block size does not divide the weight dimension",
    needs_manifest=True,
)
def check_divides(ctx: LintContext):
    yield from _grouped(ctx, "QC209")


def check_exceeds(ctx: LintContext):
    yield from _grouped(ctx, "QC210")


RULES["QC210"] = Rule(
    "QC210", "warning", "weight block size exceeds the weight dimension", True, check_exceeds
)

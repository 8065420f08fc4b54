"""QC202: a legacy ``"default"`` key that is not the first entry overrides everything before it."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule("QC202", "warning", "legacy 'default' entry is not first: it overrides earlier entries")
def check(ctx: LintContext):
    for index, expanded in enumerate(ctx.expanded):
        if not expanded.legacy or index == 0:
            continue
        raw = ctx.raw["quant_cfg"]
        key = expanded.source[-1] if isinstance(raw, dict) else _only_key(raw, expanded.source)
        if key == "default":
            yield Finding(
                f"legacy 'default' is applied where it stands (entry {index}), so it overrides "
                f"the {index} entr{'y' if index == 1 else 'ies'} before it (Model Optimizer "
                "< 0.44 applied it first). Move it first or write an explicit '*' entry.",
                ctx.entry_path(index),
            )


def _only_key(raw, source):
    element = raw[source[0]]
    if isinstance(element, dict) and len(element) == 1:
        return next(iter(element))
    return source[-1] if len(source) > 1 else None

"""QC203: ``enable`` written inside ``cfg`` is ignored; the entry's own ``enable`` decides."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


@rule("QC203", "warning", "`enable` inside `cfg` is ignored; the entry's `enable` decides")
def check(ctx: LintContext):
    for index, expanded in enumerate(ctx.expanded):
        value = expanded.value
        if not isinstance(value, dict):
            continue
        cfg = value.get("cfg")
        elements = cfg if isinstance(cfg, list) else [cfg]
        for k, element in enumerate(elements):
            if isinstance(element, dict) and "enable" in element:
                entry_enable = value.get("enable", True)
                where = (*ctx.entry_path(index), "cfg") if expanded.legacy is False else ()
                if isinstance(cfg, list) and where:
                    where = (*where, k)
                yield Finding(
                    f"cfg.enable={element['enable']!r} is ignored: the quantizer ends "
                    f"{'enabled' if entry_enable else 'disabled'} per the entry's enable "
                    f"({entry_enable!r}). Move `enable` out of `cfg`.",
                    (*where, "enable") if where else ctx.entry_path(index),
                )

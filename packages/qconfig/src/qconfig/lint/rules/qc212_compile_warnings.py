"""QC212 / QC213: warnings found while folding entries (compile.py): a list ``cfg`` aimed at a
hard-disabled quantizer, and a list ``cfg`` whose length differs from an existing sequential
quantizer's."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import RULES, Rule


def _from_compile(code: str):
    def check(ctx: LintContext):
        seen = set()
        for found, index, message in ctx.compiled.problems:
            if found == code and (index, message) not in seen:
                seen.add((index, message))
                yield Finding(message, (*ctx.entry_path(index), "cfg"))

    return check


RULES["QC212"] = Rule(
    "QC212",
    "warning",
    "list cfg aimed at a hard-disabled quantizer",
    True,
    _from_compile("QC212"),
)
RULES["QC213"] = Rule(
    "QC213",
    "warning",
    "list cfg length differs from the sequential quantizer it configures",
    True,
    _from_compile("QC213"),
)

"""QC204: the config does not start by disabling everything, so unmatched quantizers keep their
module defaults (inputs and weights *enabled* INT8, docs/model-optimizer-rules.md, 'Quantizers matched by nothing')."""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


def _is_deny_all(entry) -> bool:
    return (
        entry.quantizer_name == "*"
        and entry.cfg is None
        and entry.enable is False
        and entry.parent_class is None
    )


@rule("QC204", "warning", "no deny-all base entry first: unmatched quantizers stay INT8")
def check(ctx: LintContext):
    entries = ctx.config.quant_cfg
    if not entries or _is_deny_all(entries[0]):
        return
    if any(_is_deny_all(e) for e in entries[1:]):
        return  # a later deny-all: QC206/QC202 when it shadows entries, QC215 when it is last
    yield Finding(
        "quant_cfg does not start with {quantizer_name: '*', enable: false}: quantizers no "
        "entry matches keep their module defaults (input and weight quantizers enabled INT8). "
        "Ignore this for fragments meant to be appended to another config.",
        (*ctx.raw_path, "quant_cfg"),
    )

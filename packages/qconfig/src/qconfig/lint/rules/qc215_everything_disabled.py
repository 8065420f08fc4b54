"""QC215: a deny-all entry after every entry that enables something: nothing is quantized, on
any model.

Why without a manifest: ``{quantizer_name: "*", enable: false}`` selects every quantizer of
every model, and entries that only disable cannot switch anything back on, so the outcome does
not depend on the model. The classic case is a legacy flat dict whose ``default: {enable:
false}`` comes last (Model Optimizer renames it ``*`` where it stands); with a manifest the same
config fails Model Optimizer's weight check (QC102) whenever it asked for weights.
"""

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule


def _disables_everything(entry) -> bool:
    """Selects every quantizer (``*``, ``**``, ... and no ``parent_class``) and leaves it off,
    with or without a ``cfg``."""
    pattern = entry.quantizer_name
    return (
        entry.enable is False
        and entry.parent_class is None
        and bool(pattern)
        and set(pattern) == {"*"}
    )


@rule("QC215", "error", "a trailing deny-all entry disables every quantizer of every model")
def check(ctx: LintContext):
    entries = ctx.config.quant_cfg
    last = max((i for i, e in enumerate(entries) if _disables_everything(e)), default=None)
    if last is None or any(e.enable for e in entries[last + 1 :]):
        return
    enabling = [e for e in entries[:last] if e.enable]
    if not enabling:
        return  # a pure exclusion list: nothing was meant to be quantized
    legacy = ctx.expanded[last].legacy and ctx.expanded[last].source[-1] == "default"
    what = (
        "legacy 'default' (applied where it stands, as '*')"
        if legacy
        else repr(entries[last].quantizer_name)
    )
    from qconfig.compile.weight_check import weight_request_patterns  # only when it fires

    weights = weight_request_patterns(entries)
    detail = (
        f"; Model Optimizer's weight check fails on every model (QC102), since {weights} asked "
        "for weight quantization"
        if weights
        else ""
    )
    yield Finding(
        f"entry {last}, {what} with enable: false, comes after every entry that enables "
        f"quantizers, so every quantizer of every model ends disabled and nothing is "
        f"quantized{detail}. Move it first (a deny-all base) or drop it.",
        ctx.entry_path(last),
    )

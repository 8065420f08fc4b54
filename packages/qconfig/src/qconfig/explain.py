"""``explain(config, manifest, quantizer_name)``: which entries decided one quantizer, and how.

Answers the question Model Optimizer users ask after a calibration run went wrong ("why is this
layer not quantized?", its issue #53): the entries that matched, in order, what each did, the
final state, and near misses — entries that would have matched with another anchor or case
(``lm_head*`` vs ``model.lm_head``, ``*LM_HEAD*``).
"""

from dataclasses import dataclass, field
from typing import Any

from qconfig.callable_module import make_callable
from qconfig.compile import Trace, fold_quantizer, to_quantize_config
from qconfig.manifest import Manifest
from qconfig.matching import matches
from qconfig.plan import describe_format

__all__ = ["Explanation", "explain", "near_miss"]


@dataclass
class Explanation:
    quantizer: str
    module: str
    registry_key: str
    steps: list[tuple[int, str, str, str]] = field(
        default_factory=list
    )  # idx, pattern, target, effect
    final_enable: bool = False
    final_format: str = ""
    attributes: Any = None
    near_misses: list[tuple[int, str, str]] = field(default_factory=list)  # idx, pattern, why

    def __str__(self) -> str:
        lines = [f"{self.quantizer}  ({self.registry_key} {self.module or '<root>'})"]
        if not self.steps:
            lines.append("  no entry matched: keeps its module default")
        for index, pattern, target, effect in self.steps:
            on = f" on {target}" if target != self.quantizer else ""
            lines.append(f"  [{index}] {pattern!r}: {effect}{on}")
        state = "enabled" if self.final_enable else "disabled"
        lines.append(f"  final: {state}, {self.final_format}")
        for index, pattern, why in self.near_misses:
            lines.append(f"  near miss [{index}] {pattern!r}: {why}")
        return "\n".join(lines)


def near_miss(pattern: str, name: str) -> str | None:
    """Why ``pattern`` almost matched ``name`` (None if it is not a near miss)."""
    if matches(pattern, name):
        return None
    if matches(pattern.lower(), name.lower()):
        return "matches only when case is ignored (matching is case-sensitive)"
    if not pattern.startswith("*") and matches("*" + pattern, name):
        return f"anchored at the start: '*{pattern}' would match"
    if not pattern.endswith("*") and matches(pattern + "*", name):
        return f"anchored at the end: '{pattern}*' would match"
    if matches("*" + pattern.strip("*") + "*", name):
        return f"anchored at both ends: '*{pattern.strip('*')}*' would match"
    return None


def explain(config: Any, manifest: Manifest, quantizer_name: str) -> Explanation:
    """The entries that shaped ``quantizer_name``, in order, with their effect."""
    qc = to_quantize_config(config)
    entries = list(qc.quant_cfg)
    found = next(((m, s) for n, m, s in manifest.iter_sites() if n == quantizer_name), None)
    if found is None:
        known = manifest.quantizer_names()
        close = [n for n in known if quantizer_name in n or n.endswith(quantizer_name)][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no quantizer named {quantizer_name!r} in the manifest{hint}")
    module, site = found
    name = quantizer_name
    trace = Trace()
    state = fold_quantizer(
        name,
        site,
        frozenset(module.parent_class_keys),
        entries,
        lambda i, n: matches(entries[i].quantizer_name, n),
        trace,
    )
    out = Explanation(name, module.name, module.registry_key)
    out.steps = [
        (i, entries[i].quantizer_name, target, effect) for i, target, effect in trace.steps
    ]
    if state.children is not None:
        attrs: Any = tuple(e.attrs for e in state.children)
        out.final_enable = any(a.enable for a in attrs)
    else:
        attrs = state.single.attrs  # type: ignore[union-attr]
        out.final_enable = attrs.enable
    out.attributes = attrs
    out.final_format = describe_format(attrs)
    applied = {i for i, *_ in trace.steps}
    for i, entry in enumerate(entries):
        if i in applied:
            continue
        if matches(entry.quantizer_name, name) and entry.parent_class:
            out.near_misses.append(
                (
                    i,
                    entry.quantizer_name,
                    f"pattern matches but parent_class {entry.parent_class!r} does not "
                    f"(the module is {module.registry_key}"
                    + (", a subclass" if not module.parent_class_keys else "")
                    + ")",
                )
            )
            continue
        why = near_miss(entry.quantizer_name, name)
        if why:
            out.near_misses.append((i, entry.quantizer_name, why))
    return out


make_callable(__name__, explain)

"""Text reports of a lint run and of a compiled plan, as ``qruntime quantize`` jobs print them.

Why here and not in a job: every job that quantizes with a config wants the same two answers
before it spends time calibrating — does the config fit the model (the lint findings), and what
will it do (quantizers per format and kind, and for each disabled group the config entry that
turned it off, with its file position). ``qruntime.summary`` answers a different question (what
a model or plan holds, without the config's entries); the plan format is in
docs/manifest-and-plan.md.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qconfig.errors import Diagnostic
from qconfig.plan import Plan, QuantizerPlan, describe_format

__all__ = ["lint_report", "plan_report"]


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    for kind in ("weight", "input", "output"):
        if f"{kind}_quantizer" in last:
            return kind
    return "other"


def _flow(value: Any) -> str:
    """A compact YAML flow rendering of an entry, as a user would write it."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str) and (not value or not value[0].isalnum()):
        return f'"{value}"'
    return str(value)


def _disabling_entry(q: QuantizerPlan, entries: Sequence[Any]) -> int | None:
    """The last entry among ``q.sources`` that switched the quantizer off."""
    for index in reversed(q.sources):
        entry = entries[index] if 0 <= index < len(entries) else None
        cfg = getattr(entry, "cfg", None)
        cfg_enable = getattr(cfg, "enable", None) if not isinstance(cfg, (list, tuple)) else None
        if entry is not None and (entry.enable is False or cfg_enable is False):
            return index
    return q.sources[-1] if q.sources else None


def _no_position(index: int) -> str | None:
    return None


def plan_report(
    plan: Plan,
    entries: Sequence[Any] = (),
    locate: Callable[[int], str | None] = _no_position,
) -> str:
    """Enabled quantizers per format and kind; disabled ones grouped by the entry that turned
    them off, shown as written, with the position ``locate(index)`` gives for it."""
    total = len(plan.quantizers)
    enabled = [(n, q) for n, q in plan.quantizers.items() if q.enable]
    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    lines = [f"{len(enabled)} of {total} quantizers enabled; calibration: {methods}"]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, q in enabled:
        counts[describe_format(q.attributes)][_kind(name)] += 1
    kinds = [
        k for k in ("weight", "input", "output", "other") if any(c[k] for c in counts.values())
    ]
    if counts:
        width = max(len("format"), *(len(f) for f in counts))
        lines.append("  " + f"{'format':<{width}}" + "".join(f"  {k:>6}" for k in kinds))
        for fmt, c in sorted(counts.items()):
            lines.append("  " + f"{fmt:<{width}}" + "".join(f"  {c[k]:>6}" for k in kinds))
    groups: dict[tuple[int, int | None], list[str]] = defaultdict(list)
    for name, q in plan.quantizers.items():
        if q.enable:
            continue
        if q.hard_disabled:
            groups[(0, None)].append(name)
        else:
            index = _disabling_entry(q, entries)
            groups[(1, index) if index is not None else (2, None)].append(name)
    lines.append(f"  disabled: {total - len(enabled)}")
    for (group, index), names in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        if group == 0:
            why = "hard-disabled: an Embedding's input is token indices, never quantized"
        elif group == 2 or index is None:
            why = "off by module default, no entry enabled them"
        else:
            entry = entries[index] if 0 <= index < len(entries) else None
            shown = _flow(entry.model_dump(exclude_unset=True)) if entry is not None else ""
            where = locate(index)
            why = f"quant_cfg[{index}] {shown}" + (f"  ({where})" if where else "")
        example = ", ".join(names[:2]) + (f", ... (+{len(names) - 2})" if len(names) > 2 else "")
        lines.append(f"    {len(names):>5}  {why}")
        lines.append(f"           e.g. {example}")
    return "\n".join(lines)


def lint_report(diagnostics: Sequence[Diagnostic], show_info: bool = False) -> str:
    """Errors and warnings in full; info notes counted by code unless ``show_info``."""
    by_severity = Counter(d.severity for d in diagnostics)
    shown = [d for d in diagnostics if show_info or d.severity != "info"]
    lines = [f"  {d.severity}: {d}" for d in shown]
    errors, warnings, infos = by_severity["error"], by_severity["warning"], by_severity["info"]
    verdict = "ok" if not errors else "FAILED"
    head = f"  {verdict}: {errors} error(s), {warnings} warning(s), {infos} info note(s)"
    if infos and not show_info:
        codes = Counter(d.code for d in diagnostics if d.severity == "info")
        listed = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()))
        head += f" ({listed}; --show-info lists them)"
    return "\n".join([head, *lines])

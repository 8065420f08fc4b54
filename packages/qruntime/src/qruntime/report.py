"""Reports of a lint run, a compiled plan and a job's measurements, as ``qruntime quantize``
jobs print them.

Why here and not in a job: every job that quantizes with a config wants the same two answers
before it spends time calibrating — does the config fit the model (the lint findings), and what
will it do (quantizers per format and kind, and for each disabled group the config entry that
turned it off, with its file position) — and prints its measurements as a table. Tables are
rich renderables (no hand-built padding): printed on a :func:`job_console` they are coloured on
a terminal and plain text anywhere else; :func:`render_text` gives the plain text.
``qruntime.summary`` answers a different question (what a model or plan holds, without the
config's entries); the plan format is in docs/manifest-and-plan.md.
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from qconfig.errors import Diagnostic
from qconfig.plan import Plan, QuantizerPlan, describe_format
from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

__all__ = [
    "job_console",
    "lint_renderable",
    "lint_report",
    "plan_renderable",
    "plan_report",
    "render_text",
    "results_table",
]

#: Wide enough that no report line is wrapped when the output is a file or a pipe.
_PLAIN_WIDTH = 10_000


def job_console(out: TextIO) -> Console:
    """A console printing to ``out``: colours and the terminal's width on a terminal; on
    anything else (a file, a pipe, ``io.StringIO``) plain text, never wrapped, no ANSI codes.
    Markup and highlighting are off: reports print config entries such as ``quant_cfg[0]``
    as written."""
    terminal = bool(getattr(out, "isatty", lambda: False)())
    return Console(
        file=out,
        width=None if terminal else _PLAIN_WIDTH,
        force_terminal=terminal,
        color_system="auto" if terminal else None,
        markup=False,
        highlight=False,
        emoji=False,
    )


def render_text(renderable: RenderableType) -> str:
    """``renderable`` as plain text (no ANSI codes, no trailing spaces, lines not wrapped)."""
    buffer = io.StringIO()
    job_console(buffer).print(renderable)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").split("\n"))


def results_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A measurements table: the first column left-aligned (what was run), the others (numbers)
    right-aligned, a rule under the header."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for index, name in enumerate(columns):
        table.add_column(name, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


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


def plan_renderable(
    plan: Plan,
    entries: Sequence[Any] = (),
    locate: Callable[[int], str | None] = _no_position,
) -> Group:
    """Enabled quantizers per format and kind (a table); disabled ones grouped by the entry
    that turned them off, shown as written, with the position ``locate(index)`` gives for it."""
    total = len(plan.quantizers)
    enabled = [(n, q) for n, q in plan.quantizers.items() if q.enable]
    methods = ", ".join(str(a.method) for a in plan.algorithm) or "none"
    parts: list[RenderableType] = [
        Text(f"  {len(enabled)} of {total} quantizers enabled; calibration: {methods}")
    ]
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, q in enabled:
        counts[describe_format(q.attributes)][_kind(name)] += 1
    kinds = [
        k for k in ("weight", "input", "output", "other") if any(c[k] for c in counts.values())
    ]
    if counts:
        rows = [[fmt, *(str(c[k]) for k in kinds)] for fmt, c in sorted(counts.items())]
        parts.append(Padding(results_table(["format", *kinds], rows), (0, 0, 0, 2), expand=False))
    groups: dict[tuple[int, int | None], list[str]] = defaultdict(list)
    for name, q in plan.quantizers.items():
        if q.enable:
            continue
        if q.hard_disabled:
            groups[(0, None)].append(name)
        else:
            index = _disabling_entry(q, entries)
            groups[(1, index) if index is not None else (2, None)].append(name)
    lines = [f"  disabled: {total - len(enabled)}"]
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
    parts.append(Text("\n".join(lines)))
    return Group(*parts)


def plan_report(
    plan: Plan,
    entries: Sequence[Any] = (),
    locate: Callable[[int], str | None] = _no_position,
) -> str:
    """:func:`plan_renderable` as plain text."""
    return render_text(plan_renderable(plan, entries, locate))


def lint_renderable(diagnostics: Sequence[Diagnostic], show_info: bool = False) -> Text:
    """Errors and warnings in full; info notes counted by code unless ``show_info``. The
    verdict is green or red on a terminal."""
    by_severity = Counter(d.severity for d in diagnostics)
    shown = [d for d in diagnostics if show_info or d.severity != "info"]
    errors, warnings, infos = by_severity["error"], by_severity["warning"], by_severity["info"]
    verdict = "ok" if not errors else "FAILED"
    text = Text("  ")
    text.append(verdict, style="bold green" if not errors else "bold red")
    head = f": {errors} error(s), {warnings} warning(s), {infos} info note(s)"
    if infos and not show_info:
        codes = Counter(d.code for d in diagnostics if d.severity == "info")
        listed = ", ".join(f"{c} x{n}" for c, n in sorted(codes.items()))
        head += f" ({listed}; --show-info lists them)"
    text.append(head)
    for d in shown:
        text.append("\n  ")
        text.append(f"{d.severity}:", style="red" if d.severity == "error" else "yellow")
        text.append(f" {d}")
    return text


def lint_report(diagnostics: Sequence[Diagnostic], show_info: bool = False) -> str:
    """:func:`lint_renderable` as plain text."""
    return render_text(lint_renderable(diagnostics, show_info))

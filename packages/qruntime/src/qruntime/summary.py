"""``summary(model_or_plan)``: a readable table of formats by counts, and why quantizers are off.

For a plan the counts come from the compiled states; for a model from its live quantizers, with
calibration status (a stored amax, learned by ``lsq``, dynamic, or constant) and, where the model was quantized by
qruntime, the config entry responsible for each disabled quantizer (``plan.sources``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from qconfig.plan import Plan, QuantizerPlan, describe_format
from torch import nn

from qruntime.apply import applied_plan
from qruntime.modules.low_rank import low_rank_rank
from qruntime.quantizer import SequentialQuantizer, TensorQuantizer
from qruntime.quantizer.learned import LearnedAmaxQuantizer

__all__ = ["summary"]


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    if last.isdigit():
        last = name.rsplit(".", 2)[-2]
    for kind in ("weight_quantizer", "input_quantizer", "output_quantizer"):
        if last.endswith(kind) or last.endswith(kind + "s"):
            return kind.removesuffix("_quantizer")
    return last


def _reason(name: str, q: QuantizerPlan | None, live_enabled: bool | None = None) -> str:
    if q is None:
        return "not from a qruntime plan"
    if q.hard_disabled:
        return "hard-disabled (Embedding input: indices cannot be quantized)"
    if live_enabled is not None and live_enabled != q.enable:
        return "disabled after the plan was applied"
    if not q.sources:
        return f"{_kind(name)} quantizer off by module default"
    return f"quant_cfg[{q.sources[-1]}]"


def _calibration(q: nn.Module) -> str:
    leaves = list(q) if isinstance(q, SequentialQuantizer) else [q]
    status = []
    for leaf in leaves:
        assert isinstance(leaf, TensorQuantizer)
        if isinstance(leaf, LearnedAmaxQuantizer):  # no _amax: _amax_pre/_amax_post instead
            status.append("learned")
        elif leaf.uses_constant_amax:
            status.append("constant")
        elif leaf.is_mx_format:
            status.append("calibrated")  # MX scales are per block and need no amax
        elif leaf._buffers.get("_amax") is not None:
            status.append("calibrated")
        else:
            status.append("dynamic")
    calibration = "dynamic" if "dynamic" in status else status[0]
    rank = low_rank_rank(q)
    return calibration if rank is None else f"{calibration}, rank-{rank} low-rank branch"


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*r) for r in rows)]


def _render(
    enabled: dict[str, Counter[str]], disabled: dict[str, list[str]], algorithm: str
) -> str:
    columns = sorted({c for counts in enabled.values() for c in counts if c != "total"})
    rows = [
        (fmt, str(counts["total"]), *(str(counts[c]) for c in columns))
        for fmt, counts in sorted(enabled.items())
    ]
    lines = _table(rows, ("format", "enabled", *columns)) if rows else ["no enabled quantizers"]
    total_off = sum(len(v) for v in disabled.values())
    lines.append(f"disabled: {total_off}")
    for reason, names in sorted(disabled.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = names[0] + (f", ... (+{len(names) - 1})" if len(names) > 1 else "")
        lines.append(f"  {len(names):>5}  {reason}  e.g. {example}")
    lines.append(f"calibration: {algorithm}")
    return "\n".join(lines)


def _methods(plan: Plan | None) -> str:
    if plan is None:
        return "unknown"
    return ", ".join(str(a.method) for a in plan.algorithm) or "none"


def summary(model_or_plan: nn.Module | Plan) -> str:
    """Formats by counts of the enabled quantizers, the disabled ones grouped by reason."""
    enabled: dict[str, Counter[str]] = defaultdict(Counter)
    disabled: dict[str, list[str]] = defaultdict(list)
    if isinstance(model_or_plan, Plan):
        for name, q in model_or_plan.quantizers.items():
            if q.enable:
                enabled[describe_format(q.attributes)]["total"] += 1
            else:
                disabled[_reason(name, q)].append(name)
        return _render(enabled, disabled, _methods(model_or_plan))
    plan = applied_plan(model_or_plan)
    quantizers: dict[str, Any] = {}
    for name, module in model_or_plan.named_modules():
        if isinstance(module, SequentialQuantizer) or (
            isinstance(module, TensorQuantizer) and name.rpartition(".")[0] not in quantizers
        ):
            quantizers[name] = module
    for name, q in quantizers.items():
        planned = plan.quantizers.get(name) if plan is not None else None
        if q.is_enabled:
            counts = enabled[describe_format(q.config)]
            counts["total"] += 1
            counts[_calibration(q)] += 1
        else:
            disabled[_reason(name, planned, q.is_enabled)].append(name)
    return _render(enabled, disabled, _methods(plan))

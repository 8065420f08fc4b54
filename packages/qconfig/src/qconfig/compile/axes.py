"""Axes a weight quantizer is given that its weight does not have (compile error QC104).

Why a compile error: Model Optimizer 0.47.0 reads ``axis``, the axis keys of ``block_sizes`` and
of ``bias`` against the tensor at the first forward, and one that the tensor does not have is
silently dropped — ``axis: 5`` on a 2-D weight quantizes per tensor, ``block_sizes: {5: 16}`` is
no block at all — or, for dynamic blocks without the last axis, fails at every forward. The
manifest knows each module's weight shape, so the mistake is found before anything runs
(docs/differences.md). A Hadamard rotation whose block does not divide the weight's last
dimension fails at every forward the same way and is reported with them. Only ``weight_quantizer`` sites are checked: the shape of what an input or
output quantizer sees is not known before the forward.
"""

from collections.abc import Iterator
from typing import Any

from qconfig.attributes import QuantizerAttributeConfig, shown_int
from qconfig.blocks import block_axes
from qconfig.compile.errors import CompileError
from qconfig.errors import Diagnostic
from qconfig.manifest import ModuleSite
from qconfig.plan import QuantizerPlan

__all__ = ["axis_problems", "check_weight_axes"]

#: (entry index or None, problem) → [first quantizer name, how many quantizers]
Found = dict[tuple[int | None, str], list[Any]]


def _exists(axis: int, ndim: int) -> bool:
    return -ndim <= axis < ndim


def _as_axes(axis: Any) -> tuple:
    if axis is None:
        return ()
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def _rotation_problem(attrs: QuantizerAttributeConfig, last: int) -> str | None:
    """The Hadamard rotation splits the last dimension into power-of-2 blocks: ``block_size``
    must divide it, and without one the dimension needs an even size (Model Optimizer raises
    at every forward otherwise)."""
    rotate = attrs.rotate
    enabled = rotate if isinstance(rotate, bool) else rotate.enable
    size = None if isinstance(rotate, bool) else rotate.block_size
    if not enabled or last < 1:
        return None
    if size is None and last % 2:
        return (
            f"rotate needs a power-of-2 block dividing the last dimension ({last}), which has "
            "none; set rotate.block_size or do not rotate; Model Optimizer fails at every forward"
        )
    if size is not None and last % size:
        return (
            f"rotate.block_size {shown_int(size)} does not divide the last dimension ({last}); "
            "Model Optimizer fails at every forward"
        )
    return None


def axis_problems(
    attrs: QuantizerAttributeConfig, ndim: int, last: int | None = None
) -> Iterator[str]:
    """What in ``attrs`` names an axis a tensor of ``ndim`` dimensions (the last of size
    ``last``) does not have, or a rotation it cannot take, and what Model Optimizer would do."""
    if last is not None:
        rotation = _rotation_problem(attrs, last)
        if rotation:
            yield rotation
    valid = f"a {ndim}-D weight has axes {-ndim}..{ndim - 1}"
    missing = [a for a in _as_axes(attrs.axis) if not _exists(a, ndim)]
    if missing:
        yield (
            f"axis {', '.join(map(shown_int, missing))} does not exist ({valid}); Model "
            "Optimizer silently drops it and quantizes "
            + ("per tensor" if len(missing) == len(_as_axes(attrs.axis)) else "the other axes")
        )
    blocks = attrs.block_sizes
    axes = [k for k in block_axes(blocks) or {} if isinstance(k, int)]
    missing = [k for k in axes if not _exists(k, ndim)]
    if missing:
        yield (
            f"block_sizes axis {', '.join(map(shown_int, missing))} does not exist ({valid}); "
            "Model Optimizer silently makes no blocks along it"
        )
    if blocks is not None and blocks.get("type") == "dynamic" and axes:
        if not any(k in (-1, ndim - 1) for k in axes):
            yield (
                f"dynamic blocks need the last axis (-1 or {ndim - 1}), got "
                f"{', '.join(map(shown_int, axes))}; Model Optimizer fails at every forward "
                "('block size for dynamic quantization not found')"
            )
    bias_axes = [k for k in attrs.bias or {} if isinstance(k, int) and not isinstance(k, bool)]
    missing = [k for k in bias_axes if not _exists(k, ndim)]
    if missing:
        yield (
            f"bias axis {', '.join(map(shown_int, missing))} does not exist ({valid}); Model "
            "Optimizer silently leaves it out of the bias"
        )


def _plan_problems(
    plan: QuantizerPlan, sources: tuple[tuple[int | None, int | None], ...], shape: tuple
) -> list[tuple[int | None, str]]:
    elements = plan.attributes if plan.is_sequential else (plan.attributes,)
    out = []
    for k, attrs in enumerate(elements):
        if not attrs.enable:
            continue  # never runs
        source = sources[k][0] if k < len(sources) else None
        label = f" (sequential element {k})" if plan.is_sequential else ""
        problems = axis_problems(attrs, len(shape), shape[-1])
        out.extend((source, problem + label) for problem in problems)
    return out


def check_weight_axes(
    weight_groups: dict[tuple, list],
    signature_plans: list[list[QuantizerPlan]],
    signature_sources: list[list[tuple]],
) -> None:
    """Raise QC104 for every enabled weight quantizer given an axis its weight lacks.

    ``weight_groups`` maps ``(signature index, *weight shape)`` to ``[first module, number of
    modules]``: modules of one signature share their plans and their ``weight_quantizer``
    positions, so the check runs once per group and compile only counts modules into groups
    (docs/performance.md: a 100k-quantizer manifest must stay cheap).
    """
    found: Found = {}
    for (index, *_), (module, count) in weight_groups.items():
        for k, problem in _module_problems(
            module, signature_plans[index], signature_sources[index]
        ):
            entry = found.setdefault(
                problem, [module.quantizer_name(module.quantizers[k]), 0, module]
            )
            entry[1] += count
    if found:
        raise CompileError([_diagnostic(key, *value) for key, value in found.items()])


def _module_problems(
    module: ModuleSite, plans: list[QuantizerPlan], sources: list[tuple]
) -> list[tuple[int, tuple[int | None, str]]]:
    """(site position, (entry, problem)) for the module's enabled ``weight_quantizer``."""
    shape = tuple(module.weight_shape or ())
    return [
        (k, problem)
        for k, site in enumerate(module.quantizers)
        if site.attribute == "weight_quantizer" and plans[k].enable
        for problem in _plan_problems(plans[k], sources[k], shape)
    ]


def _diagnostic(key: tuple[int | None, str], name: str, count: int, module: ModuleSite):
    source, problem = key
    more = f" (and {count - 1} more quantizer{'s' if count > 2 else ''})" if count > 1 else ""
    shape = list(module.weight_shape or [])
    origin = f"entry {source}" if source is not None else "its module default"
    return Diagnostic(
        "QC104",
        "error",
        f"{name}{more}, weight {shape}, set by {origin}: {problem}.",
        path=f"quant_cfg[{source}].cfg" if source is not None else "quant_cfg",
    )

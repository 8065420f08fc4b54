"""Folding the entries that match one quantizer into its final state, in order.

Why apart: this is the core rule of Model Optimizer's config application (docs/model-optimizer-
rules.md, 'Applying quant_cfg'): an entry that matches replaces the attributes (a full
``cfg``), toggles the enable state only (``enable`` alone), or turns the quantizer into a
sequential one (a list ``cfg``); hard-disabled quantizers never turn on. ``compile_plan`` folds
once per group of equivalent quantizers; ``explain`` folds one quantizer with a trace.
"""

from dataclasses import dataclass, field
from typing import Any

from qconfig.attributes import QuantizerAttributeConfig, RotateConfig, is_mx_format
from qconfig.compile.errors import CompileError
from qconfig.entries import QuantizerCfgEntry
from qconfig.errors import Diagnostic
from qconfig.manifest import QuantizerSite

__all__ = ["Element", "FoldedState", "Trace", "fold_quantizer"]


@dataclass
class Element:
    attrs: QuantizerAttributeConfig
    enable_src: int | None = None
    attrs_src: int | None = None


@dataclass
class Trace:
    """What happened to one quantizer: ``(entry index, target, effect)`` per applied entry."""

    steps: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, index: int, target: str, effect: str) -> None:
        self.steps.append((index, target, effect))


@dataclass
class FoldedState:
    single: Element | None
    children: list[Element] | None
    sources: list[int]
    problems: list[tuple[str, int, str]]  # (code, entry index, message)
    matched: set[int]  # entries that selected this quantizer or one of its children

    def elements(self) -> list[Element]:
        return self.children if self.children is not None else [self.single]  # type: ignore[list-item]


def _effective(attrs: QuantizerAttributeConfig) -> QuantizerAttributeConfig:
    # set_from_attribute_config forces the straight-through gradient for MX formats.
    if not attrs.pass_through_bwd and is_mx_format(attrs.block_sizes):
        return attrs.model_copy(update={"pass_through_bwd": True})
    return attrs


def _toggled(attrs: QuantizerAttributeConfig, enable: bool, hard: bool) -> QuantizerAttributeConfig:
    update: dict[str, Any] = {"enable": enable and not hard}
    if not enable:  # exactly {"enable": False} also switches rotation off
        rotate = attrs.rotate
        if isinstance(rotate, RotateConfig):
            update["rotate"] = rotate.model_copy(update={"enable": False})
        else:
            update["rotate"] = False
    return attrs.model_copy(update=update)


def _replaced(cfg: QuantizerAttributeConfig, enable: bool, hard: bool) -> QuantizerAttributeConfig:
    return _effective(cfg.model_copy(update={"enable": enable and not hard}))


def fold_quantizer(
    name: str,
    site: QuantizerSite,
    parent_keys: frozenset[str],
    entries: list[QuantizerCfgEntry],
    selects: "Any",
    trace: Trace | None = None,
) -> FoldedState:
    """Apply every entry, in order, to one quantizer as Model Optimizer's module walk does.

    ``selects(i, name)`` tells whether entry ``i``'s pattern selects ``name``. The walk visits
    the quantizer, then — if it was a sequential quantizer before this entry and still is —
    its children ``name.0``, ``name.1``, ...
    """
    hard = site.hard_disabled
    direct = "." not in site.attribute  # a ModuleList member's parent is the list, not the module
    state = FoldedState(Element(site.defaults), None, [], [], set())
    for i, entry in enumerate(entries):
        parent_ok = entry.parent_class is None or (direct and entry.parent_class in parent_keys)
        was_sequential = state.children is not None
        descend = was_sequential
        applied = False
        if parent_ok and selects(i, name):
            state.matched.add(i)
            applied = True
            cfg = entry.cfg
            if cfg is None:
                for element in state.elements():
                    element.attrs = _toggled(element.attrs, entry.enable, hard)
                    element.enable_src = i
                if trace:
                    trace.add(i, name, f"toggle {'on' if entry.enable else 'off'}")
            elif isinstance(cfg, list):
                if hard:
                    state.problems.append(
                        (
                            "QC212",
                            i,
                            f"a list cfg cannot replace the hard-disabled {name}; it stays "
                            "disabled (Model Optimizer would swap in an enabled sequential "
                            "quantizer that is never called)",
                        )
                    )
                    applied = False
                    if trace:
                        trace.add(i, name, "ignored: hard-disabled quantizer stays disabled")
                elif not was_sequential:
                    state.children = [Element(_replaced(c, entry.enable, False), i, i) for c in cfg]
                    state.single = None
                    descend = False
                    if trace:
                        trace.add(i, name, f"make sequential ({len(cfg)} quantizers)")
                else:
                    children = state.children or []
                    if len(cfg) != len(children):
                        state.problems.append(
                            (
                                "QC213",
                                i,
                                f"{len(cfg)} attribute sets for the {len(children)} quantizers "
                                f"of sequential {name}: only the first "
                                f"{min(len(cfg), len(children))} are set",
                            )
                        )
                    for element, c in zip(children, cfg, strict=False):
                        element.attrs = _replaced(c, entry.enable, False)
                        element.enable_src = element.attrs_src = i
                    if trace:
                        trace.add(i, name, "replace sequential attributes")
            else:
                new = Element(_replaced(cfg, entry.enable, hard), i, i)
                if was_sequential:
                    state.children = None
                    descend = False  # the old children are detached
                    if trace:
                        trace.add(i, name, "back to single (sequential replaced)")
                elif trace:
                    trace.add(i, name, "replace")
                state.single = new
        if descend and state.children is not None and entry.parent_class is None:
            for k, element in enumerate(state.children):
                child = f"{name}.{k}"
                if not selects(i, child):
                    continue
                state.matched.add(i)
                applied = True
                cfg = entry.cfg
                if cfg is None:
                    element.attrs = _toggled(element.attrs, entry.enable, False)
                    element.enable_src = i
                    if trace:
                        trace.add(i, child, f"toggle {'on' if entry.enable else 'off'}")
                elif isinstance(cfg, list):
                    raise CompileError(
                        [
                            Diagnostic(
                                "QC103",
                                "error",
                                f"entry {i} ({entry.quantizer_name!r}) applies a list cfg to "
                                f"{child}, a child of a sequential quantizer: Model Optimizer "
                                "would nest sequential quantizers (a state that cannot be "
                                "restored). Give each quantizer one list cfg.",
                                path=f"quant_cfg[{i}]",
                            )
                        ]
                    )
                else:
                    element.attrs = _replaced(cfg, entry.enable, False)
                    element.enable_src = element.attrs_src = i
                    if trace:
                        trace.add(i, child, "replace")
        if applied:
            state.sources.append(i)
    return state

"""``compile_plan(config, manifest)``: fold the ordered entries into per-quantizer states.

The result is the state Model Optimizer 0.47.0 reaches when ``mtq.quantize`` applies the config
once to a freshly converted model (docs/manifest-and-plan.md), with these deliberate
differences, each listed in docs/differences.md:

* an unknown ``parent_class`` key is a compile error before anything is applied (Model Optimizer
  raises midway, with earlier entries already applied);
* hard-disabled quantizers stay disabled: a list ``cfg`` does not replace the Embedding's input
  quantizer with an enabled sequential quantizer — it is reported instead;
* a list ``cfg`` that would nest sequential quantizers (applying a list to the children of an
  existing sequential quantizer) is a compile error: the nested state cannot be saved and
  restored and is never what the author meant.

The 0.47.0 post-application weight check is reproduced as a compile error with the same
condition; ``weight_check=False`` skips it. Model Optimizer reads the switch from the environment
(``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1``); here only the application boundary does (the CLI,
``qruntime.quantize``), and the compiler takes it as an argument.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Any

from qconfig.attributes import QuantizerAttributeConfig, RotateConfig, is_mx_format
from qconfig.base import ConfigBase
from qconfig.entries import QuantizerCfgEntry
from qconfig.errors import ConfigError, Diagnostic
from qconfig.manifest import Manifest, QuantizerSite
from qconfig.matching import digit_blind, matches, required_text, shape_of
from qconfig.plan import Plan, QuantizerPlan
from qconfig.quantize import QuantizeConfig

__all__ = ["CompileError", "Trace", "compile_plan", "fold_quantizer", "to_quantize_config"]


class CompileError(ConfigError):
    """The config cannot be applied to this model; nothing would have been changed."""


# --------------------------------------------------------------------------------------------
# state of one quantizer while entries are folded into it
# --------------------------------------------------------------------------------------------


@dataclass
class _Element:
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
class _Folded:
    single: _Element | None
    children: list[_Element] | None
    sources: list[int]
    problems: list[tuple[str, int, str]]  # (code, entry index, message)
    matched: set[int]  # entries that selected this quantizer or one of its children

    def elements(self) -> list[_Element]:
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
) -> _Folded:
    """Apply every entry, in order, to one quantizer as Model Optimizer's module walk does.

    ``selects(i, name)`` tells whether entry ``i``'s pattern selects ``name``. The walk visits
    the quantizer, then — if it was a sequential quantizer before this entry and still is —
    its children ``name.0``, ``name.1``, ...
    """
    hard = site.hard_disabled
    direct = "." not in site.attribute  # a ModuleList member's parent is the list, not the module
    state = _Folded(_Element(site.defaults), None, [], [], set())
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
                    state.children = [
                        _Element(_replaced(c, entry.enable, False), i, i) for c in cfg
                    ]
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
                new = _Element(_replaced(cfg, entry.enable, hard), i, i)
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


# --------------------------------------------------------------------------------------------
# the whole manifest
# --------------------------------------------------------------------------------------------


def to_quantize_config(config: Any) -> QuantizeConfig:
    """Accept a ``QuantizeConfig``, a mapping, or a preset-style dict."""
    if isinstance(config, QuantizeConfig):
        return config
    if isinstance(config, Mapping):
        return QuantizeConfig(**dict(config))
    raise TypeError(f"expected a QuantizeConfig or a mapping, got {type(config).__name__}")


@dataclass
class CompileResult:
    """A plan plus what lint needs to know about each entry and quantizer."""

    plan: Plan
    entries: list[QuantizerCfgEntry]
    matched_count: list[int]
    live: list[bool]
    problems: list[tuple[str, int, str]]
    #: (every quantizer name in manifest order, the signature index of each module, per
    #: signature the element sources of its quantizers); see ``element_sources``
    layout: tuple[list[str], list[int], list[list[tuple]]] = field(default=([], [], []), repr=False)

    @cached_property
    def element_sources(self) -> dict[str, tuple[tuple[int | None, int | None], ...]]:
        """Per quantizer name, per element: (entry that set its attributes, entry that set its
        enable state). Only lint needs it, so it is built on first use."""
        names, module_signatures, sources = self.layout
        flat = [s for signature in module_signatures for s in sources[signature]]
        return dict(zip(names, flat, strict=True))


def _selector(entries: list[QuantizerCfgEntry]):
    def selects(i: int, name: str) -> bool:
        return matches(entries[i].quantizer_name, name)

    return selects


def compile_detailed(
    config: Any, manifest: Manifest, *, weight_check: bool = True
) -> CompileResult:
    """``compile_plan`` plus per-entry match counts and liveness (for lint and explain)."""
    qc = to_quantize_config(config)
    entries = list(qc.quant_cfg)
    known = set(manifest.registry_keys)
    errors = [
        Diagnostic(
            "QC101",
            "error",
            f"parent_class {e.parent_class!r} is not a registered module key; known keys: "
            f"{', '.join(sorted(known)) or '(none)'}",
            path=f"quant_cfg[{i}].parent_class",
        )
        for i, e in enumerate(entries)
        if e.parent_class and e.parent_class not in known
    ]
    if errors:
        raise CompileError(errors)

    selects = _selector(entries)
    blind = [digit_blind(e.quantizer_name) for e in entries]
    sighted = [i for i, b in enumerate(blind) if not b]
    max_children = max(
        [len(e.cfg) for e in entries if isinstance(e.cfg, list)] + [0],
    )
    default_keys: dict[int, Any] = {}
    site_ids: dict[int, int] = {}  # id(site) -> small int standing for its site key
    interned: dict[tuple, int] = {}
    hard_of: list[bool] = []

    def site_key(site: QuantizerSite) -> int:
        """What about a quantizer site (besides its name) can change the fold's outcome, as a
        small int: group keys are hashed once per module, so they must hash cheaply."""
        defaults = default_keys.get(id(site.defaults))
        if defaults is None:
            defaults = default_keys[id(site.defaults)] = _freeze(site.defaults.__dict__)
        full = (shape_of(site.attribute), site.hard_disabled, defaults)
        key = interned.get(full)
        if key is None:
            key = interned[full] = len(hard_of)
            hard_of.append(site.hard_disabled)
        site_ids[id(site)] = key
        return key

    # Group quantizers whose fold must come out the same (see matching.py). Work is done per
    # module *signature* (name shape, classes, quantizer sites): a 100k-quantizer MoE has a few
    # dozen signatures, so per quantizer only its name is built and stored.
    suffixes = [""] + [f".{k}" for k in range(max_children)]
    sighted_patterns = [entries[i].quantizer_name for i in sighted]
    # names that contain none of these cannot match a sighted pattern (unless normalized)
    required = [required_text(p) for p in sighted_patterns]
    maybe = re.compile(
        "" if "" in required else "|".join(["quantizers?\\.", *map(re.escape, required)])
    )
    #
    # Per module, only what must outlive the loop is kept, and none of it in new containers: the
    # names go into one flat list, the signature as an int index. Everything else built per
    # module (names, key tuples, frozensets) is freed at once unless its signature is new, so a
    # large manifest does not fill the heap with tuples that the cyclic collector would then
    # scan again and again (its full collections used to double the time on 100k quantizers).
    representative: dict[tuple, tuple[str, QuantizerSite, frozenset[str]]] = {}
    signature_index: dict[tuple, int] = {}
    signatures: list[tuple[list[tuple], str]] = []  # (group key per site, registry key)
    module_count: list[int] = []  # modules per signature
    all_names: list[str] = []  # every quantizer name, in manifest order
    module_signatures: list[int] = []  # signature index per module
    for module in manifest.modules:
        if not module.quantizers:
            continue
        prefix = f"{module.name}." if module.name else ""
        names = [prefix + site.attribute for site in module.quantizers]
        bits: tuple = ()
        if sighted_patterns and maybe.search(
            "\n".join(n + suffix for n in names for suffix in suffixes)
        ):
            bits = tuple(
                tuple(matches(p, n + suffix) for p in sighted_patterns for suffix in suffixes)
                for n in names
            )
        parent_keys = frozenset(module.parent_class_keys)
        module_key = (shape_of(module.name), parent_keys)
        sites = tuple(
            site_ids[id(site)] if id(site) in site_ids else site_key(site)
            for site in module.quantizers
        )
        signature = (module_key, module.registry_key, sites, bits)
        index = signature_index.get(signature)
        if index is None:
            group_keys = []
            for k, (site, name) in enumerate(zip(module.quantizers, names, strict=True)):
                key = (module_key, sites[k], bits[k] if bits else ())
                representative.setdefault(key, (name, site, parent_keys))
                group_keys.append(key)
            index = signature_index[signature] = len(signatures)
            signatures.append((group_keys, module.registry_key))
            module_count.append(0)
        module_count[index] += 1
        module_signatures.append(index)
        all_names.extend(names)

    folded = {
        key: fold_quantizer(name, site, parent_keys, entries, selects)
        for key, (name, site, parent_keys) in representative.items()
    }

    counts: dict[tuple, int] = dict.fromkeys(folded, 0)
    for (group_keys, _), n_modules in zip(signatures, module_count, strict=True):
        for key in group_keys:
            counts[key] += n_modules
    matched_count = [0] * len(entries)
    live = [False] * len(entries)
    problems: list[tuple[str, int, str]] = []
    for key, state in folded.items():
        for i in state.matched:
            matched_count[i] += counts[key]
        for element in state.elements():
            for src in (element.attrs_src, element.enable_src):
                if src is not None:
                    live[src] = True
        problems.extend(state.problems)

    shared: dict[tuple, QuantizerPlan] = {}
    signature_plans: list[list[QuantizerPlan]] = []
    signature_sources: list[list[tuple]] = []
    for group_keys, registry_key in signatures:
        plans, element_lists = [], []
        for key in group_keys:
            state = folded[key]
            plan = shared.get((key, registry_key))
            if plan is None:
                if state.children is not None:
                    attrs: Any = tuple(e.attrs for e in state.children)
                    enable = any(a.enable for a in attrs)
                else:
                    attrs = state.single.attrs  # type: ignore[union-attr]
                    enable = attrs.enable
                plan = shared[(key, registry_key)] = QuantizerPlan(
                    enable=enable,
                    attributes=attrs,
                    parent_class=registry_key,
                    sources=tuple(state.sources),
                    hard_disabled=hard_of[key[1]],  # key = (module key, site key, bits)
                )
            plans.append(plan)
            element_lists.append(tuple((e.attrs_src, e.enable_src) for e in state.elements()))
        signature_plans.append(plans)
        signature_sources.append(element_lists)

    quantizers: dict[str, QuantizerPlan] = dict(
        zip(
            all_names,
            [plan for index in module_signatures for plan in signature_plans[index]],
            strict=True,
        )
    )

    diagnostics = [
        Diagnostic(code, "warning", msg, path=f"quant_cfg[{i}]")
        for code, i, msg in dict.fromkeys(problems)
    ]
    if weight_check:
        _weight_check(entries, quantizers)
    plan = Plan(quantizers, qc.algorithms(), diagnostics, manifest.model)
    layout = (all_names, module_signatures, signature_sources)
    return CompileResult(plan, entries, matched_count, live, problems, layout)


def _freeze(value: Any) -> Any:
    """A hashable stand-in for attribute values (dicts and lists become tuples)."""
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, ConfigBase):
        return (type(value).__name__, _freeze(value.__dict__))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def compile_plan(config: Any, manifest: Manifest, *, weight_check: bool = True) -> Plan:
    """The per-quantizer plan of ``config`` on the model described by ``manifest``.

    ``weight_check=False`` skips the check that a config asking for weight quantization enables
    a weight quantizer. Model Optimizer skips it when ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1``;
    here the caller decides (the ``qconfig`` CLI reads that variable), so the result depends
    on the arguments only.
    """
    return compile_detailed(config, manifest, weight_check=weight_check).plan


def weight_request_patterns(entries: list[QuantizerCfgEntry]) -> list[str]:
    """0.47.0's notion of "the config asks for weight quantization", quirks included:
    entries keyed by ``quantizer_name`` only (``parent_class`` ignored), last one wins."""
    last = {e.quantizer_name: e for e in entries}
    return [
        pattern
        for pattern, e in last.items()
        if e.enable and ("weight_quantizer" in pattern or fnmatchcase("weight_quantizer", pattern))
    ]


def any_weight_quantizer_enabled(quantizers: Mapping[str, QuantizerPlan]) -> bool:
    for name, q in quantizers.items():
        if "weight_quantizer" not in name:
            continue
        if q.enable:
            return True
    return False


def _weight_check(entries: list[QuantizerCfgEntry], quantizers: dict[str, QuantizerPlan]) -> None:
    patterns = weight_request_patterns(entries)
    if patterns and not any_weight_quantizer_enabled(quantizers):
        raise CompileError(
            [
                Diagnostic(
                    "QC102",
                    "error",
                    "The quantization config asks for weight quantization but no weight "
                    "quantizer is enabled, so nothing would be quantized. These patterns asked "
                    f"for it: {patterns}",
                    path="quant_cfg",
                )
            ]
        )

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
* an ``axis``, block axis or bias axis that a weight quantizer's weight does not have is a
  compile error (QC104, :mod:`qconfig.compile.axes`): Model Optimizer silently drops it, or
  fails at every forward for dynamic blocks without the last axis.

The 0.47.0 post-application weight check is reproduced as a compile error with the same
condition; ``weight_check=False`` skips it. Model Optimizer reads the switch from the environment
(``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1``); here only the application boundary does (the CLI,
``qruntime.quantize``), and the compiler takes it as an argument.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from qconfig.base import ConfigBase
from qconfig.compile.axes import check_weight_axes
from qconfig.compile.errors import CompileError
from qconfig.compile.fold import Element, FoldedState, Trace, fold_quantizer
from qconfig.compile.weight_check import (
    any_weight_quantizer_enabled,
    check_weights,
    weight_request_patterns,
)
from qconfig.entries import QuantizerCfgEntry
from qconfig.errors import Diagnostic
from qconfig.manifest import Manifest, QuantizerSite
from qconfig.matching import digit_blind, matches, required_text, shape_of
from qconfig.plan import Plan, QuantizerPlan
from qconfig.quantize import QuantizeConfig

__all__ = [
    "CompileError",
    "CompileResult",
    "Element",
    "FoldedState",
    "Trace",
    "any_weight_quantizer_enabled",
    "compile_detailed",
    "compile_plan",
    "fold_quantizer",
    "to_quantize_config",
    "weight_request_patterns",
]


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
    weight_groups: dict[tuple, list] = {}  # (signature, *weight shape) -> [module, count]
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
        if module.weight_shape:  # grouped for the axis check (compile/axes.py)
            group = weight_groups.get(weight_key := (index, *module.weight_shape))
            if group is None:
                weight_groups[weight_key] = [module, 1]
            else:
                group[1] += 1

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
    if len(quantizers) != len(all_names):  # a name twice: only a manifest built in Python
        manifest.check_unique_names()

    diagnostics = [
        Diagnostic(code, "warning", msg, path=f"quant_cfg[{i}]")
        for code, i, msg in dict.fromkeys(problems)
    ]
    check_weight_axes(weight_groups, signature_plans, signature_sources)
    if weight_check:
        check_weights(entries, quantizers)
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

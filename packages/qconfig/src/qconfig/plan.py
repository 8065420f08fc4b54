"""The compiled, flat per-quantizer plan (format ``qconfig.plan/v2``; v1 files still load).

A plan is the quantizer state Model Optimizer 0.47.0 reaches when it applies a config once to a
freshly converted model, written out per quantizer so it can be reviewed, diffed and applied
without re-running the matching. Its JSON shares identical attribute sets (a 100k-quantizer MoE
has a handful of distinct ones) and is byte-for-byte deterministic.

v2 adds ``specs``: beside each attribute set, what it resolves to (format family, granularity,
block shape, scale format; :mod:`qconfig.spec`), so a reviewer reads "NVFP4, block 16, dynamic"
without knowing the attribute rules. They are derived data: reading a plan recomputes them and
refuses a file whose stored specs disagree with its attributes (a hand edit of one but not the
other). v1 files, which have no specs, load unchanged (docs/manifest-and-plan.md).
"""

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qconfig.algorithms import QuantizeAlgorithmConfig
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.errors import Diagnostic
from qconfig.keys import restore_int_keys
from qconfig.quantize import resolve_algorithms
from qconfig.spec import QuantizerSpec, resolve_spec

__all__ = ["PLAN_FORMAT", "READABLE_PLAN_FORMATS", "Plan", "QuantizerPlan", "describe_format"]

PLAN_FORMAT = "qconfig.plan/v2"
#: Formats :meth:`Plan.from_json` reads.
READABLE_PLAN_FORMATS = ("qconfig.plan/v1", PLAN_FORMAT)

Attributes = QuantizerAttributeConfig | tuple[QuantizerAttributeConfig, ...]


@dataclass(frozen=True)
class QuantizerPlan:
    """Effective state of one quantizer (a tuple of attributes = a SequentialQuantizer).

    Immutable and shared: every quantizer that ends in the same state refers to one object.
    """

    enable: bool
    attributes: Attributes
    parent_class: str
    sources: tuple[int, ...] = ()
    hard_disabled: bool = False
    #: The attributes resolved once (a tuple for a sequential quantizer): what the runtime's
    #: quantizer modules, numerics and calibration read (docs/architecture.md).
    spec: QuantizerSpec | tuple[QuantizerSpec, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        attrs = self.attributes
        spec = tuple(map(resolve_spec, attrs)) if isinstance(attrs, tuple) else resolve_spec(attrs)
        object.__setattr__(self, "spec", spec)

    @property
    def is_sequential(self) -> bool:
        return isinstance(self.attributes, tuple)


@dataclass
class Plan:
    """Per-quantizer states keyed by full name, plus the validated calibration steps."""

    quantizers: dict[str, QuantizerPlan]
    algorithm: tuple[QuantizeAlgorithmConfig, ...] = ()
    diagnostics: list[Diagnostic] = field(default_factory=list)
    manifest_model: str = ""

    # -- serialization ----------------------------------------------------------------------
    def to_json(self) -> str:
        """Deterministic JSON. Attribute sets and whole quantizer states are interned: each
        quantizer name points at a state, each state at attribute sets, so a 100k-quantizer
        MoE plan stays a few MB."""
        set_index: dict[str, int] = {}
        by_id: dict[int, int] = {}
        sets: list[Any] = []
        specs: list[dict[str, Any]] = []

        def intern(attrs: QuantizerAttributeConfig) -> int:
            index = by_id.get(id(attrs))
            if index is None:
                dumped = _dump_attrs(attrs)
                key = json.dumps(dumped, sort_keys=True)
                index = set_index.setdefault(key, len(sets))
                if index == len(sets):
                    sets.append(dumped)
                    specs.append(resolve_spec(attrs).describe())
                by_id[id(attrs)] = index
            return index

        state_index: dict[tuple, int] = {}
        states: list[dict[str, Any]] = []
        quantizers: dict[str, int] = {}
        for name, q in self.quantizers.items():
            attrs: Any = (
                tuple(intern(a) for a in q.attributes) if q.is_sequential else intern(q.attributes)
            )
            key = (q.enable, attrs, q.parent_class, q.sources, q.hard_disabled)
            index = state_index.get(key)
            if index is None:
                index = state_index[key] = len(states)
                row: dict[str, Any] = {
                    "enable": q.enable,
                    "attributes": list(attrs) if isinstance(attrs, tuple) else attrs,
                    "parent_class": q.parent_class,
                    "sources": list(q.sources),
                }
                if q.hard_disabled:
                    row["hard_disabled"] = True
                states.append(row)
            quantizers[name] = index
        doc = {
            "format": PLAN_FORMAT,
            "model": self.manifest_model,
            "algorithm": [
                {"method": a.method, **a.model_dump(mode="json", exclude_unset=True)}
                for a in self.algorithm
            ],
            "attribute_sets": sets,
            "specs": specs,
            "states": states,
            "quantizers": quantizers,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> "Plan":
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") not in READABLE_PLAN_FORMATS:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise ValueError(
                f"not a plan document: format={found!r}, expected one of {READABLE_PLAN_FORMATS}"
            )
        sets = [
            QuantizerAttributeConfig.model_validate(restore_int_keys(_tuples(s)))
            for s in doc["attribute_sets"]
        ]
        stored_specs = doc.get("specs")
        if stored_specs is not None:
            _check_specs(sets, stored_specs)
        states = []
        for row in doc["states"]:
            ref = row["attributes"]
            attrs = tuple(sets[i] for i in ref) if isinstance(ref, list) else sets[ref]
            states.append(
                QuantizerPlan(
                    enable=row["enable"],
                    attributes=attrs,
                    parent_class=row["parent_class"],
                    sources=tuple(row["sources"]),
                    hard_disabled=row.get("hard_disabled", False),
                )
            )
        quantizers = {name: states[index] for name, index in doc["quantizers"].items()}
        diagnostics = [Diagnostic(**d) for d in doc.get("diagnostics", [])]
        algorithm = resolve_algorithms(
            [restore_int_keys(a, everywhere=True) for a in doc["algorithm"]]
        )
        return cls(quantizers, algorithm, diagnostics, doc.get("model", ""))

    # -- reading ------------------------------------------------------------------------------
    def enabled(self) -> list[str]:
        return [n for n, q in self.quantizers.items() if q.enable]

    def summary(self) -> str:
        """Quantizers per format and the disabled ones, as a small text table."""
        counts: Counter[str] = Counter()
        disabled: Counter[str] = Counter()
        for name, q in self.quantizers.items():
            if q.enable:
                counts[describe_format(q.attributes)] += 1
            else:
                disabled["hard-disabled" if q.hard_disabled else _kind(name)] += 1
        width = max([len(k) for k in counts] + [len("format")])
        lines = [f"{'format':<{width}}  quantizers"]
        lines += [f"{fmt:<{width}}  {n}" for fmt, n in sorted(counts.items())]
        lines.append(f"{'disabled':<{width}}  {sum(disabled.values())}")
        lines += [f"  {kind:<{width - 2}}  {n}" for kind, n in sorted(disabled.items())]
        methods = ", ".join(str(a.method) for a in self.algorithm) or "none"
        lines.append(f"calibration: {methods}")
        return "\n".join(lines)


def _check_specs(sets: list[QuantizerAttributeConfig], stored: Any) -> None:
    """A v2 file's specs must be what its attribute sets resolve to."""
    if not isinstance(stored, list) or len(stored) != len(sets):
        raise ValueError("plan 'specs' must list one spec per attribute set")
    for index, (attrs, spec) in enumerate(zip(sets, stored, strict=True)):
        expected = resolve_spec(attrs).describe()
        if spec != expected:
            raise ValueError(
                f"plan specs[{index}] {spec!r} does not match attribute_sets[{index}], which "
                f"resolves to {expected!r}; was one edited without the other?"
            )


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    return last if last.endswith(("quantizer", "quantizers")) else "other"


def _tuples(value: Any) -> Any:
    """num_bits / scale_bits / axis are tuples in the models; JSON gave lists."""
    if isinstance(value, Mapping):
        return {
            k: (
                tuple(v)
                if k in ("num_bits", "scale_bits", "axis") and isinstance(v, list)
                else _tuples(v)
            )
            for k, v in value.items()
        }
    return value


def _dump_attrs(attrs: QuantizerAttributeConfig) -> dict[str, Any]:
    data = attrs.model_dump(mode="python")
    if callable(data.get("calibrator")) or isinstance(data.get("calibrator"), tuple):
        data["calibrator"] = repr(data["calibrator"])
    return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def describe_format(attrs: Attributes) -> str:
    """Short human name of a format: ``INT8 per-channel(0)``, ``NVFP4 (block 16)``, ..."""
    if isinstance(attrs, tuple):
        return " → ".join(describe_format(a) for a in attrs)
    bits = attrs.num_bits
    blocks = attrs.block_sizes
    dynamic_blocks = blocks is not None and blocks.get("type") == "dynamic"
    scale = blocks.get("scale_bits") if blocks else None
    sizes = {k: v for k, v in (blocks or {}).items() if isinstance(k, int)}
    if isinstance(bits, tuple):
        base = {(4, 3): "FP8", (5, 2): "FP8-E5M2", (2, 1): "FP4", (3, 2): "FP6", (2, 3): "FP6-E2M3"}
        name = base.get(bits, f"E{bits[0]}M{bits[1]}")
        if bits == (2, 1) and scale == (4, 3):
            name = "NVFP4"
        elif scale == (8, 0):
            name = "MX" + name.replace("-", "")
    else:
        name = f"INT{bits}" if scale != (8, 0) else f"MXINT{bits}"
    if sizes:
        sizes_text = ",".join("full" if v is None else str(v) for v in sizes.values())
        layout = f"{'dynamic ' if dynamic_blocks else ''}block {sizes_text}"
        if list(sizes.values()) == [None]:
            layout = "per-token"
    elif attrs.axis is not None:
        layout = f"per-channel({attrs.axis})"
    else:
        layout = "per-tensor"
    if attrs.type == "dynamic":
        layout += " dynamic"
    return f"{name} {layout}"

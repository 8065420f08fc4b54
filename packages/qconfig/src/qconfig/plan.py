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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from qconfig.algorithms import QuantizeAlgorithmConfig, algorithm_class
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.documents import (
    DocumentReader,
    check_tree,
    describe,
    json_tuples,
    parse_json,
    validation_error,
)
from qconfig.errors import Diagnostic
from qconfig.keys import restore_int_keys
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
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan file. A file that cannot be read as text (missing, a directory, a FIFO,
        ``/dev/zero``, too large, not UTF-8) is a :class:`qconfig.fileio.InputFileError` (an
        ``OSError``); one that is not a valid plan is a :class:`qconfig.errors.DocumentError`
        naming the file and the JSON path."""
        from qconfig.fileio import read_text

        return cls.from_json(read_text(path), file=str(path))

    @classmethod
    def from_json(cls, text: str | bytes, *, file: str | None = None) -> "Plan":
        """Parse and validate a plan; every defect is a DocumentError at its JSON path.

        Checked field by field with exact JSON types (docs/manifest-and-plan.md, 'Reading
        manifests and plans: what is checked'): indices are non-negative integers within their table (``-1`` does not mean
        the last row, ``true`` is not 1), ``algorithm`` is the list of steps the writer writes,
        each state's ``enable`` is the one its attribute sets give (``apply_plan`` applies the
        attribute sets), and the stored specs are what the attribute sets resolve to.
        """
        doc = parse_json(text, file=file)
        return _PlanReader(file).plan(doc)

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


class _PlanReader(DocumentReader):
    """The checks of :meth:`Plan.from_json`, one method per part of the document."""

    def plan(self, doc: Any) -> Plan:
        if not isinstance(doc, dict):
            self.fail((), f"not a plan document: expected a JSON object, found {describe(doc)}")
        found = doc.get("format")
        if found not in READABLE_PLAN_FORMATS:
            hint = " (this is a manifest, not a plan)" if found == "qconfig.manifest/v1" else ""
            self.fail(
                ("format",) if "format" in doc else (),
                f"not a plan document: format={_clip_repr(found)}, expected one of "
                f"{READABLE_PLAN_FORMATS}{hint}",
            )
        self.object(doc, (), required=_PLAN_REQUIRED, optional=_PLAN_OPTIONAL)
        sets = self.attribute_sets(doc["attribute_sets"])
        if "specs" in doc:
            self.specs(doc["specs"], sets)
        states = self.states(doc["states"], sets)
        return Plan(
            self.quantizers(doc["quantizers"], states),
            self.algorithm(doc["algorithm"]),
            self.diagnostics(doc.get("diagnostics", [])),
            self.string(doc.get("model", ""), ("model",)),
        )

    def attribute_sets(self, value: Any) -> list[QuantizerAttributeConfig]:
        return [
            self.attribute_set(raw, ("attribute_sets", i))
            for i, raw in enumerate(self.array(value, ("attribute_sets",)))
        ]

    def attribute_set(self, raw: Any, path: tuple[int | str, ...]) -> QuantizerAttributeConfig:
        self.object(raw, path, optional=QuantizerAttributeConfig.model_fields)
        check_tree(raw, path, file=self.file)
        try:
            attrs = QuantizerAttributeConfig.model_validate(
                restore_int_keys(json_tuples(raw)), strict=True
            )
        except ValidationError as exc:
            raise validation_error(exc, raw, file=self.file, path=path) from None
        try:
            resolve_spec(attrs)
        except ValueError as exc:
            self.fail(path, f"cannot be resolved: {exc}")
        return attrs

    def specs(self, value: Any, sets: list[QuantizerAttributeConfig]) -> None:
        """A v2 file's specs must be what its attribute sets resolve to."""
        stored = self.array(value, ("specs",))
        if len(stored) != len(sets):
            self.fail(
                ("specs",),
                f"lists {len(stored)} specs for {len(sets)} attribute sets (one per set)",
            )
        for index, (attrs, spec) in enumerate(zip(sets, stored, strict=True)):
            expected = resolve_spec(attrs).describe()
            if spec != expected:
                self.fail(
                    ("specs", index),
                    f"{_clip_json(spec)} does not match attribute_sets[{index}], which resolves "
                    f"to {_clip_json(expected)}; was one edited without the other?",
                )

    def states(self, value: Any, sets: list[QuantizerAttributeConfig]) -> list[QuantizerPlan]:
        return [
            self.state(row, ("states", i), sets)
            for i, row in enumerate(self.array(value, ("states",)))
        ]

    def state(
        self, row: Any, path: tuple[int | str, ...], sets: list[QuantizerAttributeConfig]
    ) -> QuantizerPlan:
        self.object(row, path, required=_STATE_REQUIRED, optional=("hard_disabled",))
        enable = self.boolean(row["enable"], (*path, "enable"))
        attrs = self.state_attributes(row["attributes"], (*path, "attributes"), sets)
        hard_disabled = self.boolean(row.get("hard_disabled", False), (*path, "hard_disabled"))
        sources = tuple(
            self.integer(s, (*path, "sources", k), minimum=0)
            for k, s in enumerate(self.array(row["sources"], (*path, "sources")))
        )
        derived = any(a.enable for a in attrs) if isinstance(attrs, tuple) else attrs.enable
        if enable != derived:
            self.fail(
                (*path, "enable"),
                f"is {json.dumps(enable)} but its attribute set(s) say enable: "
                f"{json.dumps(derived)}. A state's enable is derived from its attribute sets "
                "(for a sequential quantizer: any element on), and apply_plan applies the "
                "attribute sets: edit their enable instead",
            )
        if hard_disabled and (enable or isinstance(attrs, tuple)):
            self.fail(
                (*path, "hard_disabled"),
                "a hard-disabled quantizer can never be enabled nor become a sequential "
                "quantizer (an Embedding's input quantizer sees token indices)",
            )
        return QuantizerPlan(
            enable=enable,
            attributes=attrs,
            parent_class=self.string(row["parent_class"], (*path, "parent_class")),
            sources=sources,
            hard_disabled=hard_disabled,
        )

    def state_attributes(
        self, ref: Any, path: tuple[int | str, ...], sets: list[QuantizerAttributeConfig]
    ) -> Attributes:
        """An index into ``attribute_sets``, or a non-empty list of them (sequential)."""
        if isinstance(ref, list):
            if not ref:
                self.fail(path, "a sequential quantizer needs at least one attribute set")
            return tuple(
                sets[self.index(r, (*path, k), len(sets), "attribute_sets")]
                for k, r in enumerate(ref)
            )
        if isinstance(ref, bool) or not isinstance(ref, int):
            self.expect(ref, path, "an index into 'attribute_sets' or a list of indices")
        return sets[self.index(ref, path, len(sets), "attribute_sets")]

    def quantizers(self, value: Any, states: list[QuantizerPlan]) -> dict[str, QuantizerPlan]:
        if not isinstance(value, dict):
            self.expect(value, ("quantizers",), "an object (quantizer name → index into 'states')")
        size = len(states)
        out = {}
        for name, index in value.items():
            if type(index) is not int or not 0 <= index < size:  # the common case is one test
                self.index(index, ("quantizers", name), size, "states")
            if not name:
                self.fail(("quantizers", name), "a quantizer name cannot be empty")
            out[name] = states[index]
        return out

    def algorithm(self, value: Any) -> tuple[QuantizeAlgorithmConfig, ...]:
        """The steps as the writer writes them: a list of objects with a ``method``. (A bare
        ``"max"`` is a config form, not a plan form: it used to be iterated letter by letter.)"""
        if not isinstance(value, list):
            self.expect(
                value, ("algorithm",), 'a list of calibration steps (e.g. [{"method": "max"}])'
            )
        return tuple(self.algorithm_step(step, ("algorithm", i)) for i, step in enumerate(value))

    def algorithm_step(self, step: Any, path: tuple[int | str, ...]) -> QuantizeAlgorithmConfig:
        if not isinstance(step, dict):
            self.expect(step, path, 'a calibration step (an object such as {"method": "max"})')
        if "method" not in step:
            self.fail(path, "missing required key 'method'")
        method = step["method"]
        if method is not None and not isinstance(method, str):
            self.expect(method, (*path, "method"), "a method name (a string) or null")
        check_tree(step, path, file=self.file)
        try:
            cls = algorithm_class(method)
        except ValueError as exc:
            self.fail((*path, "method"), str(exc))
        values = restore_int_keys(step, everywhere=True)
        try:
            return cls.model_validate(values, strict=True)
        except ValidationError as exc:
            raise validation_error(exc, step, file=self.file, path=path) from None

    def diagnostics(self, value: Any) -> list[Diagnostic]:
        return [
            self.diagnostic(d, ("diagnostics", i))
            for i, d in enumerate(self.array(value, ("diagnostics",)))
        ]

    def diagnostic(self, raw: Any, path: tuple[int | str, ...]) -> Diagnostic:
        self.object(raw, path, required=("code", "severity", "message"), optional=_DIAG_OPTIONAL)
        severity = self.string(raw["severity"], (*path, "severity"))
        if severity not in ("error", "warning", "info"):
            self.fail((*path, "severity"), f"expected error, warning or info, found {severity!r}")
        values: dict[str, Any] = {"severity": severity}
        for key in ("code", "message", "path"):
            if key in raw:
                values[key] = self.string(raw[key], (*path, key))
        if raw.get("file") is not None:
            values["file"] = self.string(raw["file"], (*path, "file"))
        for key in ("line", "column"):
            if raw.get(key) is not None:
                values[key] = self.integer(raw[key], (*path, key), minimum=1)
        if "fixable" in raw:
            values["fixable"] = self.boolean(raw["fixable"], (*path, "fixable"))
        return Diagnostic(**values)


_PLAN_REQUIRED = ("format", "algorithm", "attribute_sets", "states", "quantizers")
_PLAN_OPTIONAL = ("model", "specs", "diagnostics")
_STATE_REQUIRED = ("enable", "attributes", "parent_class", "sources")
_DIAG_OPTIONAL = ("file", "line", "column", "path", "fixable")


def _clip_json(value: Any, limit: int = 300) -> str:
    """A value as JSON for a message, or what it is when that would be long (or not JSON)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return describe(value)
    return text if len(text) <= limit else describe(value)


def _clip_repr(value: Any) -> str:
    return repr(value) if isinstance(value, str) and len(value) < 80 else describe(value)


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    return last if last.endswith(("quantizer", "quantizers")) else "other"


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

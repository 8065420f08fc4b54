"""The torch-free inventory of a model's quantizer sites (format ``qconfig.manifest/v1``).

A manifest is what ``compile_plan`` needs to know about a model: which modules Model Optimizer
would convert, under which registry key, which ``parent_class`` keys can match them (the test is
exact: a converted subclass of ``nn.Linear`` is *not* matched by ``"nn.Linear"``), their weight
shapes, and each quantizer with its module-default attributes (docs/model-optimizer-rules.md,
'Module conversion and the registry'). ``qruntime.inventory(model)`` produces one from a real
(or meta-device) model.
"""

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from qconfig.attributes import QuantizerAttributeConfig
from qconfig.documents import (
    DocumentReader,
    check_tree,
    describe,
    json_tuples,
    parse_json,
    validation_error,
)
from qconfig.keys import restore_int_keys

__all__ = ["MANIFEST_FORMAT", "Manifest", "ModuleSite", "QuantizerSite"]

MANIFEST_FORMAT = "qconfig.manifest/v1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class QuantizerSite(_Strict):
    """One quantizer of a converted module, as conversion leaves it (before any config)."""

    attribute: str = Field(
        description=(
            "Name relative to its module: `weight_quantizer`, `input_quantizer`, "
            "`weight_ih_l0_weight_quantizer`, `gate_up_proj_weight_quantizers.0`, ..."
        )
    )
    defaults: QuantizerAttributeConfig = Field(
        description="Module-default attributes; `defaults.enable` is the default on/off state."
    )
    hard_disabled: bool = Field(
        default=False,
        description="Can never be enabled (the Embedding's input quantizer).",
    )

    @field_validator("attribute")
    @classmethod
    def _named(cls, attribute: str) -> str:
        # an empty name would make the quantizer's full name its module's name (or "")
        if not attribute:
            raise ValueError("a quantizer's attribute name cannot be empty")
        return attribute

    @field_validator("defaults", mode="wrap")
    @classmethod
    def _validated_once(cls, value: Any, handler: Any) -> QuantizerAttributeConfig:
        # An attribute set is validated when it is made (from_json makes one per distinct
        # value); pydantic would run its model validators again for every site that shares it,
        # a third of the time of loading a 100k-quantizer manifest.
        if type(value) is QuantizerAttributeConfig:
            return value
        return handler(value)

    @field_serializer("defaults", when_used="json")
    def _sparse_defaults(self, defaults: QuantizerAttributeConfig) -> dict:
        # only what differs from the attribute defaults: readable, and 5x smaller files
        return defaults.model_dump(mode="json", exclude_defaults=True)


class ModuleSite(_Strict):
    """A module Model Optimizer converts, with its quantizers."""

    name: str = Field(description="Dotted module name from named_modules() ('' = the root).")
    class_name: str = Field(description="Python class of the original module, e.g. `MyLinear`.")
    registry_key: str = Field(
        description="Registry key the module was converted under, e.g. `nn.Linear`."
    )
    parent_class_keys: list[str] = Field(
        default_factory=list,
        description=(
            "`parent_class` values that match this module's quantizers: its own key if the "
            "class is registered itself, nothing for a converted subclass."
        ),
    )
    weight_shape: list[int] | None = Field(default=None, description="Shape of `weight`.")
    weight_dtype: str | None = Field(default=None, description="dtype of `weight`.")
    subclass_of: list[str] = Field(
        default_factory=list,
        description="Registry keys of registered classes this module's class derives from.",
    )
    quantizers: list[QuantizerSite] = Field(default_factory=list)

    @field_validator("weight_shape")
    @classmethod
    def _sizes(cls, shape: list[int] | None) -> list[int] | None:
        # block-size and effective-bits checks divide by these
        if shape is not None and any(size < 0 for size in shape):
            raise ValueError(f"a weight shape has no negative sizes, found {shape}")
        return shape

    def quantizer_name(self, site: QuantizerSite) -> str:
        return f"{self.name}.{site.attribute}" if self.name else site.attribute


class Manifest(_Strict):
    """Inventory of every quantizer site of one model."""

    format: Literal["qconfig.manifest/v1"] = Field(default=MANIFEST_FORMAT, alias="format")
    model: str = Field(default="", description="What the manifest was made from.")
    registry_keys: list[str] = Field(
        default_factory=list,
        description="Every key `parent_class` may name (the registry at inventory time).",
    )
    modules: list[ModuleSite] = Field(default_factory=list)

    # -- IO -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read a manifest file. A file that cannot be read as text (missing, a directory, a
        FIFO, ``/dev/zero``, too large, not UTF-8) is a :class:`qconfig.fileio.InputFileError`
        (an ``OSError``); one that is not a valid manifest is a
        :class:`qconfig.errors.DocumentError` naming the file and the JSON path."""
        from qconfig.fileio import read_text

        return cls.from_json(read_text(path), file=str(path))

    @classmethod
    def from_json(cls, text: str | bytes, *, file: str | None = None) -> "Manifest":
        """Parse and validate a manifest; every defect is a DocumentError at its JSON path.

        JSON types are exact (``"quantizers": 5``, ``true`` for an integer and ``"1"`` for a
        number are errors), ``format`` is required, and two quantizers with one full name are
        refused: a plan has one state per name, so one of them would be silently dropped.
        Equal ``defaults`` become one shared object (a 100k-quantizer MoE has a handful of
        distinct ones), which also makes loading several times faster.
        """
        data = parse_json(text, file=file)
        reader = DocumentReader(file)
        _check_format(reader, data)
        _intern_defaults(reader, data)
        try:
            manifest = cls.model_validate(data, strict=True)
        except ValidationError as exc:
            raise validation_error(exc, data, file=file) from None
        manifest.check_unique_names(file=file)
        return manifest

    def to_json(self, *, indent: int | None = 1) -> str:
        data = self.model_dump(mode="json", exclude_defaults=False)
        return json.dumps(data, indent=indent, sort_keys=False, allow_nan=False) + "\n"

    # -- queries --------------------------------------------------------------------------
    def quantizer_names(self) -> list[str]:
        return [m.quantizer_name(q) for m in self.modules for q in m.quantizers]

    def check_unique_names(self, *, file: str | None = None) -> None:
        """Module names and full quantizer names must be unique: a plan has one state per
        name, so one of two would be dropped silently. :class:`DocumentError` at the second,
        naming the first. ``from_json`` checks every file; ``compile_plan`` checks a manifest
        built in Python when its plan comes out with fewer names than the manifest has."""
        reader = DocumentReader(file)
        modules: dict[str, int] = {}
        quantizers: dict[str, tuple[int, int]] = {}
        for i, module in enumerate(self.modules):
            first = modules.setdefault(module.name, i)
            if first != i:
                reader.fail(
                    ("modules", i, "name"),
                    f"module name {module.name!r} is already used by modules[{first}] "
                    "(named_modules() lists each module once)",
                )
            for j, site in enumerate(module.quantizers):
                name = module.quantizer_name(site)
                seen = quantizers.setdefault(name, (i, j))
                if seen != (i, j):
                    reader.fail(
                        ("modules", i, "quantizers", j, "attribute"),
                        f"quantizer name {name!r} is already used by modules[{seen[0]}]"
                        f".quantizers[{seen[1]}] (a plan has one state per name: one of them would "
                        "be silently dropped)",
                    )

    def iter_sites(self):
        """(full quantizer name, module, site) in model order."""
        for module in self.modules:
            for site in module.quantizers:
                yield module.quantizer_name(site), module, site


def _check_format(reader: DocumentReader, data: Any) -> None:
    """A manifest is an object whose ``format`` is the one this version writes."""
    if not isinstance(data, dict):
        reader.expect(data, (), "a manifest (a JSON object)")
    if "format" not in data:
        reader.fail((), f"missing required key 'format' (expected {MANIFEST_FORMAT!r})")
    found = data["format"]
    if found != MANIFEST_FORMAT:
        hint = " (this is a plan, not a manifest)" if str(found).startswith("qconfig.plan/") else ""
        reader.fail(
            ("format",),
            f"not a manifest of a format this qconfig reads: found {describe(found)}, "
            f"expected {MANIFEST_FORMAT!r}{hint}",
        )


def _intern_defaults(reader: DocumentReader, data: dict[str, Any]) -> None:
    """Validate each site's ``defaults`` once per distinct value and share the object.

    Only well-formed sites are visited; everything else is left for the model validation to
    report at its path.
    """
    interned: dict[str, QuantizerAttributeConfig] = {}
    modules = data.get("modules")
    for i, module in enumerate(modules if isinstance(modules, list) else ()):
        sites = module.get("quantizers") if isinstance(module, dict) else None
        for j, site in enumerate(sites if isinstance(sites, list) else ()):
            raw = site.get("defaults") if isinstance(site, dict) else None
            if not isinstance(raw, dict):
                continue
            path = ("modules", i, "quantizers", j, "defaults")
            try:
                key = json.dumps(raw, sort_keys=True)
            except RecursionError:
                key = None
            defaults = interned.get(key) if key is not None else None
            if defaults is None:
                check_tree(raw, path, file=reader.file)
                values = restore_int_keys(json_tuples(raw))
                try:
                    defaults = QuantizerAttributeConfig.model_validate(values, strict=True)
                except ValidationError as exc:
                    raise validation_error(exc, raw, file=reader.file, path=path) from None
                interned[key] = defaults  # type: ignore[index]
            site["defaults"] = defaults

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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from qconfig.attributes import QuantizerAttributeConfig
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
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        """Parse a manifest; equal ``defaults`` become one shared object (a 100k-quantizer MoE
        has a handful of distinct ones), which also makes loading several times faster."""
        data = json.loads(text)
        interned: dict[str, QuantizerAttributeConfig] = {}
        for module in data.get("modules", []) if isinstance(data, dict) else []:
            for site in module.get("quantizers", []) if isinstance(module, dict) else []:
                raw = site.get("defaults") if isinstance(site, dict) else None
                if not isinstance(raw, dict):
                    continue
                key = json.dumps(raw, sort_keys=True)
                defaults = interned.get(key)
                if defaults is None:
                    defaults = interned[key] = QuantizerAttributeConfig.model_validate(
                        restore_int_keys(raw)
                    )
                site["defaults"] = defaults
        return cls.model_validate(data)

    def to_json(self, *, indent: int | None = 1) -> str:
        data = self.model_dump(mode="json", exclude_defaults=False)
        return json.dumps(data, indent=indent, sort_keys=False) + "\n"

    # -- queries --------------------------------------------------------------------------
    def quantizer_names(self) -> list[str]:
        return [m.quantizer_name(q) for m in self.modules for q in m.quantizers]

    def iter_sites(self):
        """(full quantizer name, module, site) in model order."""
        for module in self.modules:
            for site in module.quantizers:
                yield module.quantizer_name(site), module, site

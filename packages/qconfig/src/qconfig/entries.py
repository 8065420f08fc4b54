"""One element of ``quant_cfg``: ``QuantizerCfgEntry`` (docs/model-optimizer-rules.md, 'Entries of quant_cfg')."""

from collections.abc import Iterable, Mapping
from typing import Annotated, Any

from pydantic import Discriminator, Field, Tag, model_validator

from qconfig.attributes import QuantizerAttributeConfig
from qconfig.base import ConfigBase

__all__ = ["QuantizerCfgEntry", "find_quant_cfg_entry_by_path"]


def _cfg_shape(value: Any) -> str | None:
    # A tagged union reports errors of the one branch the input was meant for, instead of
    # one error per union member.
    if value is None:
        return "none"
    return "sequential" if isinstance(value, (list, tuple)) else "single"


CfgField = Annotated[
    Annotated[QuantizerAttributeConfig, Tag("single")]
    | Annotated[list[QuantizerAttributeConfig], Tag("sequential")]
    | Annotated[None, Tag("none")],
    Discriminator(_cfg_shape),
]


def _is_empty_cfg(cfg: Any) -> bool:
    if isinstance(cfg, dict):
        return not cfg
    if isinstance(cfg, list):
        return all(isinstance(item, dict) and not item for item in cfg)
    return False


class QuantizerCfgEntry(ConfigBase):
    """Select quantizers by name pattern (and parent class) and configure or toggle them.

    ``cfg`` present → full replacement of the matched quantizers' attributes, enabled per the
    entry's own ``enable`` (an ``enable`` inside ``cfg`` is ignored: 'Full replacement'); ``cfg`` absent →
    only the on/off state changes ('Enable-only entries').
    """

    quantizer_name: str = Field(
        description=(
            "fnmatch pattern over full quantizer names: `*` also crosses dots, `?` one "
            "character, `[kv]` a class; anchored at both ends and case-sensitive."
        ),
        examples=[
            "*",
            "*weight_quantizer",
            "*input_quantizer",
            "*output_quantizer",
            "*lm_head*",
            "*mlp*weight_quantizer",
            "*[kv]_bmm_quantizer",
            "*.experts.*weight_quantizer",
            "*router*",
        ],
    )
    parent_class: str | None = Field(
        default=None,
        description=(
            "Only quantizers whose parent module is exactly this registered class "
            "(e.g. `nn.Linear`); subclasses are not matched."
        ),
        examples=["nn.Linear", "nn.Conv2d", "nn.Embedding", "nn.BatchNorm2d", "nn.LayerNorm"],
    )
    cfg: CfgField = Field(
        default=None,
        description=(
            "Attributes that fully replace the matched quantizers' configuration; a list makes "
            "a sequential quantizer. Omit to only switch quantizers on or off."
        ),
    )
    enable: bool = Field(
        default=True,
        description="On/off state of the matched quantizers; wins over an `enable` in `cfg`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_cfg(cls, values: Any) -> Any:
        if not isinstance(values, dict) or not _is_empty_cfg(values.get("cfg")):
            return values
        if values.get("enable") is False:
            return {**values, "cfg": None}
        raise ValueError(
            "QuantizerCfgEntry 'cfg' must specify at least one quantizer attribute; got an "
            f"empty mapping/list for quantizer {values.get('quantizer_name')!r}. To keep "
            "existing attributes, drop 'cfg' and rely on 'enable=True'; to disable, set "
            "'enable=False'."
        )

    @model_validator(mode="after")
    def _has_instruction(self) -> "QuantizerCfgEntry":
        if "cfg" not in self.model_fields_set and "enable" not in self.model_fields_set:
            raise ValueError(
                "QuantizerCfgEntry must specify 'cfg', 'enable', or both. An entry with only "
                f"'quantizer_name'={self.quantizer_name!r} has no effect (implicit enable=True "
                "is not allowed; set it explicitly)."
            )
        return self


def find_quant_cfg_entry_by_path(
    entries: Iterable[QuantizerCfgEntry | Mapping[str, Any]], quantizer_name: str
) -> QuantizerCfgEntry | Mapping[str, Any]:
    """The *last* entry whose ``quantizer_name`` equals ``quantizer_name`` exactly.

    No wildcard matching: this looks up an entry by its literal pattern, and the last one is
    the one that takes effect.
    """
    found = None
    for entry in entries:
        if entry.get("quantizer_name") == quantizer_name:
            found = entry
    if found is None:
        raise KeyError(f"No quant_cfg entry with quantizer_name={quantizer_name!r}")
    return found

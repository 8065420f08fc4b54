"""The resolved spec at run time: the numerics pick the format its family names, and a
quantizer's spec follows the runtime rewrites Model Optimizer makes visible in its state."""

import pytest
import torch
from qconfig import presets
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.loader import load_config
from qconfig.spec import resolve_spec
from qruntime import TensorQuantizer
from qruntime.numerics import resolve_format

FORMAT_OF_FAMILY = {"int": {"int"}, "fp": {"fp8_e4m3"}, "mx": {"mx"}}
FORMAT_OF_FAMILY["nvfp4"] = {"nvfp4_dynamic", "nvfp4_static"}


def _enabled_preset_sets() -> list[QuantizerAttributeConfig]:
    out = []
    for name in presets.names():
        for entry in load_config(presets.get(name)).quant_cfg:
            cfgs = entry.cfg if isinstance(entry.cfg, list) else [entry.cfg]
            for cfg in cfgs:
                if cfg and cfg.get("enable", True) and cfg.get("backend") is None:
                    out.append(QuantizerAttributeConfig.model_validate(dict(cfg)))
    return out


@pytest.mark.parametrize("attrs", _enabled_preset_sets(), ids=lambda a: str(a.num_bits))
def test_format_follows_the_family(attrs: QuantizerAttributeConfig) -> None:
    spec = resolve_spec(attrs)
    if spec.strategy == "token":
        spec = spec.replace(block_sizes=None)  # what the first forward turns it into
    assert resolve_format(spec).name in FORMAT_OF_FAMILY[spec.family]


def test_quantizer_spec_follows_the_token_rewrite() -> None:
    q = TensorQuantizer(
        QuantizerAttributeConfig(num_bits=8, block_sizes={-1: None}, type="dynamic")
    )
    assert q.spec.strategy == "token"
    q(torch.randn(2, 3, 4))
    assert q.spec.strategy == "channel" and q.spec.axis == (0, 1)
    assert q.attributes()["axis"] == (0, 1) and q.attributes()["block_sizes"] is None
    assert q.config.block_sizes == {-1: None}  # the configured value is kept


def test_partial_update_keeps_the_runtime_layout() -> None:
    q = TensorQuantizer(QuantizerAttributeConfig(num_bits=4, block_sizes={-1: 4}))
    q(torch.randn(2, 8))
    assert q.spec.axis == (0,)  # the static block view keeps dim 0
    q.set_from_attribute_config({"num_bits": 8})
    assert q.spec.axis == (0,) and q.spec.num_bits == 8
    q.set_from_attribute_config({"enable": False})
    assert not q.is_enabled

"""effective_bits against hand-derived values: element bits plus scales per element, an
unquantized weight at its dtype's width, and SVDQuant's low-rank factors."""

import warnings

import pytest
import qruntime
import torch
from qruntime.bits import effective_bits
from torch import nn


def _weights(cfg):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "0.weight_quantizer", "cfg": cfg},
        ],
        "algorithm": None,
    }


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 64), nn.Linear(64, 8))


def test_int4_blocks_of_128_cost_4_25_bits():
    model = qruntime.quantize(_model(), _weights({"num_bits": 4, "block_sizes": {-1: 128}}))
    bits = effective_bits(model)
    assert bits.bits == pytest.approx(4 + 32 / 128)
    assert bits.quantized_tensors == 1 and bits.all_tensors == 2
    total = 256 * 64 * (4 + 32 / 128) + 64 * 8 * 32  # the second weight is float32
    assert bits.all_bits == pytest.approx(total / (256 * 64 + 64 * 8))


def test_int8_per_output_channel_costs_one_float32_per_row():
    model = qruntime.quantize(_model(), _weights({"num_bits": 8, "axis": 0}))
    assert effective_bits(model).bits == pytest.approx(8 + 32 / 256)


def test_svdquant_branch_is_counted():
    """rank r: r x cin and cout x r float32 factors beside the 4.25-bit residual."""
    cfg = _weights({"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}})
    cfg["algorithm"] = {"method": "svdquant", "lowrank": 4}
    data = [torch.randn(3, 256, generator=torch.Generator().manual_seed(s)) for s in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = qruntime.quantize(_model(), cfg, lambda m: [m(x) for x in data])
    expected = 4 + 32 / 128 + 4 * (256 + 64) * 32 / (256 * 64)
    assert effective_bits(model).bits == pytest.approx(expected)

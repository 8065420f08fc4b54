"""The llm-compressor anchor (bench/peer_llmcompressor.py) measures what it claims: an INT4
group-128 model whose forward uses weights on a 4-bit grid, and a sane cosine.

Why here and not under tests/: llm-compressor cannot be installed in the dev venv (it requires
an older transformers), so this file runs only in the peers venv: ``make peers-test``. The
truth is independent of llm-compressor: each weight matrix is read back from the quantized
layer's own forward (an identity input), and for round-to-nearest it is compared with the
grid derived by hand (scale = group absmax / 7.5, codes rounded and clamped to [-8, 7]).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_llmcompressor as peer  # bench/ is not a package: found through sys.path

ROWS = {row.name: row for row in peer.ROWS}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    peer.import_llmcompressor()
    return peer.load_minilm(eval_size=2)


def quantized(data, name: str) -> nn.Module:
    model = copy.deepcopy(data.model)
    seconds = peer.quantize(ROWS[name], model, data.calibration(2).batches)
    assert seconds > 0
    return model


def effective_weight(linear: nn.Linear) -> torch.Tensor:
    """The weight the layer's forward multiplies by: its output for the identity, less the
    bias (exact: each output element is one weight times one plus zeros)."""
    eye = torch.eye(linear.in_features)
    with torch.no_grad():
        out = linear(eye) - (0 if linear.bias is None else linear.bias)
    return out.T.contiguous()


def linears(model: nn.Module) -> dict[str, nn.Linear]:
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert len(found) == 37  # 6 blocks x 6 linears + the pooler
    return found


def groups(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1, peer.GROUP_SIZE)


def test_rtn_is_the_hand_derived_int4_group_grid(data):
    model = quantized(data, "rtn")
    float_linears = linears(data.model)
    for name, linear in linears(model).items():
        original = groups(float_linears[name].weight.detach())
        scale = original.abs().amax(dim=-1, keepdim=True) / 7.5
        expected = (original / scale).round().clamp(-8, 7) * scale
        got = groups(effective_weight(linear))
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(got, original), name  # the forward really quantizes


@pytest.mark.parametrize("name", ["awq folded", "awq input-scales", "gptq"])
def test_calibrated_weights_lie_on_a_4bit_grid_per_group(data, name):
    """At most 16 distinct values in every group of 128, each an integer in [-8, 7] times the
    group's scale (the layer's ``weight_scale``, one per output row and group), and not the
    float weight. (GPTQ writes its quantized weight back into ``weight``; the others keep a
    float weight that the forward quantizes.)"""
    model = quantized(data, name)
    float_linears = linears(data.model)
    for layer, linear in linears(model).items():
        got = groups(effective_weight(linear))
        for row in got.reshape(-1, peer.GROUP_SIZE):
            assert row.unique().numel() <= 16, layer
        scale = linear.weight_scale.detach()
        assert scale.shape == got.shape[:2], layer
        codes = got / scale.unsqueeze(-1)
        assert (codes - codes.round()).abs().max() < 1e-3, layer
        assert codes.round().min() >= -8 and codes.round().max() <= 7, layer
        original = float_linears[layer.removesuffix(".1")].weight  # input-scales: Sequential
        assert not torch.equal(got.reshape(original.shape), original), layer


@pytest.mark.parametrize("name", ["rtn", "awq input-scales"])
def test_cosine_is_sane(data, name):
    result = peer.run_row(data, ROWS[name], data.calibration(2).batches)
    assert "error" not in result, result
    assert 0.8 < result["cosine"] < 0.9999, result


def test_awq_is_deterministic(data):
    """Two runs choose the same scales (llm-compressor's basic pipeline did not: its AWQ
    reference outputs were computed with uninitialised weight scales)."""
    first, second = quantized(data, "awq input-scales"), quantized(data, "awq input-scales")
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a, b), name

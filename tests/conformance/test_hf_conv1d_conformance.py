"""GPT-2's ``Conv1D`` against Model Optimizer 0.47.0, run in the same test.

Model Optimizer converts each ``Conv1D`` into its ``QuantLinear`` with the weight transposed to
``[out, in]``; qruntime does the same conversion (qruntime.modules.conv1d). After quantization
with the same config and loop, every quantizer state, every ``state_dict`` key, shape and value
(weights included) and the logits on an unseen batch must be equal bit for bit.
"""

from __future__ import annotations

import copy
import warnings

import hf_models
import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch

NAME = "gpt2"
CONV1D_SUFFIXES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def quantize_both(preset: str, algorithm: str | None = "max"):
    model, loop = hf_models.build(NAME), hf_models.forward_loop(NAME)
    cfg = copy.deepcopy(getattr(mtq, preset))
    if algorithm is not None:
        cfg["algorithm"] = algorithm
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    return model, ref, ours


def assert_bit_equal(model, ref, ours) -> None:
    assert oracle.normalized_states(qruntime.quantizer_states(ours)) == oracle.quantizer_states(ref)
    expected, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].shape == value.shape, key
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
    assert expected["transformer.h.0.attn.c_attn.weight"].shape == (96, 32)
    oracle.assert_same_buffers(ref, ours)
    reference = hf_models.outputs(ref, NAME)
    assert torch.equal(hf_models.outputs(ours, NAME), reference)
    assert not torch.equal(hf_models.outputs(model, NAME), reference), "no effect"
    assert ours.lm_head.weight is ours.transformer.wte.weight


@pytest.mark.parametrize("preset", ["INT8_DEFAULT_CFG", "FP8_DEFAULT_CFG"])
def test_max_calibration_is_bit_exact(preset):
    assert_bit_equal(*quantize_both(preset))


def test_int4_awq_lite_is_bit_exact():
    model, ref, ours = quantize_both("INT4_AWQ_CFG", algorithm=None)  # the preset's awq_lite
    assert ours.transformer.h[0].mlp.c_fc.input_quantizer.pre_quant_scale is not None
    assert_bit_equal(model, ref, ours)


def test_nvfp4_blocks_are_bit_exact(reference_fake_quant):
    assert_bit_equal(*quantize_both("NVFP4_DEFAULT_CFG"))


def test_inventory_is_model_optimizers_but_names_the_class_conv1d():
    """Three documented differences on Conv1D sites (docs/differences.md): the manifest names
    the original class (Model Optimizer's converted module is a ``QuantLinear``), and
    ``parent_class: Conv1D`` selects these modules (it selects nothing in Model Optimizer)."""
    model = hf_models.build(NAME)
    expected = oracle.manifest_of(model, NAME).model_dump()
    got = qruntime.inventory(model, NAME).model_dump()
    assert "Conv1D" in got["registry_keys"] and "Conv1D" in expected["registry_keys"]
    conv1d = 0
    for ours, theirs in zip(got["modules"], expected["modules"], strict=True):
        if ours["name"].endswith(CONV1D_SUFFIXES):
            conv1d += 1
            assert (ours["class_name"], theirs["class_name"]) == ("Conv1D", "Linear")
            assert ours["parent_class_keys"] == ["nn.Linear", "Conv1D"]
            assert theirs["parent_class_keys"] == ["nn.Linear"]
            assert (ours["subclass_of"], theirs["subclass_of"]) == (["Conv1D"], ["nn.Linear"])
            for field in ("class_name", "parent_class_keys", "subclass_of"):
                ours[field] = theirs[field]
        assert ours == theirs
    assert conv1d == 8


def test_parent_class_linear_selects_conv1d_in_both():
    model = hf_models.build(NAME)
    cfg = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"parent_class": "nn.Linear", "quantizer_name": "*weight_quantizer", "enable": True},
        ],
        "algorithm": None,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = qruntime.compile_for(model, cfg)
        theirs = oracle.quantizer_states(oracle.apply(model, cfg["quant_cfg"]))
    assert oracle.plan_states(plan) == theirs
    enabled = {n for n, s in theirs.items() if s["enable"]}
    assert enabled == {
        *(f"transformer.h.{i}.{p}.weight_quantizer" for i in (0, 1) for p in CONV1D_SUFFIXES),
        "lm_head.weight_quantizer",
    }

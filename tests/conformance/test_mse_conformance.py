"""``mse`` and ``local_hessian`` against Model Optimizer 0.47.0 on the zoo models.

Each case calibrates a deep copy of the same model with both libraries and the same forward
loop, then compares every quantizer's state (enable, attributes), every calibration buffer
(``_amax``, ``_global_amax``: bit-exact, same dtype, same ``state_dict`` keys in the same order)
and the outputs on unseen data. The grids cover the search options (step, start and stop
multipliers), the amax layouts (per channel, per tensor, static blocks of 128 and 16) and the
NVFP4-static FP8-scale sweep of the two presets; Model Optimizer cannot fake-quantize NVFP4 on
CPU, so for those its NVFP4 quantizers compute with qruntime's reference numerics (the
``reference_fake_quant`` fixture of conftest.py) while the search loop, the
calibrators and everything else are its own.

One difference is normalised, and checked while doing so: Model Optimizer leaves its search
calibrator (``MseCalibrator`` / ``NVFP4MSECalibrator``) on each weight quantizer it searched,
qruntime keeps the configured one (docs/differences.md). The quantizers that carry a search
calibrator there must be exactly the ones qruntime searches.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qruntime.calibrate.mse import SearchOptions, will_search

SEARCH_CALIBRATORS = ("MseCalibrator", "NVFP4MSECalibrator")

FORMATS = {
    "int8-channel": {"num_bits": 8, "axis": 0},
    "int8-tensor": {"num_bits": 8},
    "int4-b128": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
    "int4-b16": {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}},
    "fp8-tensor": {"num_bits": (4, 3)},
    "fp8-2d-b8": {"num_bits": (4, 3), "block_sizes": {-1: 8, -2: 8}},
}
OPTIONS = {
    "default": {},
    "coarse": {"step_size": 0.3, "start_multiplier": 0.5, "stop_multiplier": 2.0},
    "fine-narrow": {"step_size": 0.02, "start_multiplier": 0.8, "stop_multiplier": 1.2},
}


def _config(weight_cfg, algorithm, input_cfg=None):
    entries = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": copy.deepcopy(weight_cfg)},
    ]
    if input_cfg is not None:
        entries.append({"quantizer_name": "*input_quantizer", "cfg": copy.deepcopy(input_cfg)})
    return {"quant_cfg": entries, "algorithm": copy.deepcopy(algorithm)}


def _normalized_reference(ref, ours, algorithm):
    """Model Optimizer's quantizer states with its search calibrators named as configured,
    after checking that they sit exactly on the quantizers qruntime searches."""
    states = oracle.quantizer_states(ref)
    options = SearchOptions.of(algorithm)
    ours_modules = dict(ours.named_modules())
    for name, state in states.items():
        attrs = state["attributes"]
        if isinstance(attrs, list):
            continue
        searched = attrs["calibrator"] in SEARCH_CALIBRATORS
        weight = name.endswith("weight_quantizer")
        assert searched == (weight and will_search(ours_modules[name], options)), name
        if searched:
            state["attributes"] = {**attrs, "calibrator": "max"}
    return states


def _compare(name, cfg, *, model=None):
    """Calibrate with both libraries; assert identical state and outputs."""
    model = zoo.build(name) if model is None else model
    loop = zoo.forward_loop(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    algorithm = qruntime.applied_plan(ours).algorithm[0]
    got = {
        k: {"enable": v["enable"], "attributes": oracle.normalize_rotate(v["attributes"])}
        for k, v in qruntime.quantizer_states(ours).items()
    }
    assert got == _normalized_reference(ref, ours, algorithm)
    oracle.assert_same_buffers(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))
    return ref, ours


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_mse_llama_grid_is_bit_exact(fmt, options):
    _compare("llama", _config(FORMATS[fmt], {"method": "mse", **OPTIONS[options]}))


@pytest.mark.parametrize("fmt", ["int8-channel", "int4-b16", "fp8-tensor"])
@pytest.mark.parametrize("name", ["cnn", "moe"])
def test_mse_other_models_are_bit_exact(name, fmt):
    _compare(name, _config(FORMATS[fmt], {"method": "mse", **OPTIONS["coarse"]}))


def test_mse_with_activation_quantizers_and_bfloat16_weights_is_bit_exact():
    """bf16 weights: the amax search runs in float32 and the result keeps the buffer dtype."""
    model = zoo.build("llama").to(torch.bfloat16)
    cfg = _config(FORMATS["int8-channel"], {"method": "mse"}, input_cfg={"num_bits": 8})

    def loop(m):
        for batch in (zoo.example_inputs("llama", seed=s) for s in (0, 1)):
            m(*batch)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    for key, value in oracle.quantizer_buffers(ref).items():
        assert oracle.quantizer_buffers(ours)[key].dtype == value.dtype, key
        assert torch.equal(oracle.quantizer_buffers(ours)[key], value), key
    assert torch.equal(oracle.zoo_outputs(ours, "llama"), oracle.zoo_outputs(ref, "llama"))


def test_mse_without_data_searches_weights_like_modelopt():
    model = zoo.build("llama")
    cfg = _config(FORMATS["int8-channel"], {"method": "mse"}, input_cfg={"num_bits": 8})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), None)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), None)
    assert list(oracle.quantizer_buffers(ours)) == list(oracle.quantizer_buffers(ref))
    assert all("weight_quantizer" in k for k in oracle.quantizer_buffers(ours))
    for key, value in oracle.quantizer_buffers(ref).items():
        assert torch.equal(oracle.quantizer_buffers(ours)[key], value), key


def test_fp8_scale_sweep_leaves_other_formats_at_max_like_modelopt():
    cfg = _config(FORMATS["int4-b128"], {"method": "mse", "fp8_scale_sweep": True})
    with pytest.warns(UserWarning, match="fp8_scale_sweep"):
        qruntime.quantize(zoo.build("llama"), copy.deepcopy(cfg), zoo.forward_loop("llama"))
    _, ours = _compare("llama", cfg)
    max_cfg = _config(FORMATS["int4-b128"], "max")
    plain = qruntime.quantize(zoo.build("llama"), max_cfg, zoo.forward_loop("llama"))
    for key, value in oracle.quantizer_buffers(plain).items():
        assert torch.equal(oracle.quantizer_buffers(ours)[key], value), key


# ------------------------------------------------------------------------------ local_hessian


@pytest.mark.parametrize(
    "fmt", ["int8-channel", "int4-b16", "int8-tensor", "fp8-tensor", "fp8-2d-b8"]
)
def test_local_hessian_without_sweep_is_bit_exact(fmt):
    algorithm = {"method": "local_hessian", "fp8_scale_sweep": False, **OPTIONS["coarse"]}
    _compare("llama", _config(FORMATS[fmt], algorithm, input_cfg={"num_bits": 8}))


@pytest.mark.parametrize("name", ["cnn", "moe"])
def test_local_hessian_other_models_are_bit_exact(name):
    algorithm = {"method": "local_hessian", "fp8_scale_sweep": False}
    _compare(name, _config(FORMATS["int8-channel"], algorithm))


def test_local_hessian_block_other_than_the_quantization_block_is_bit_exact():
    algorithm = {"method": "local_hessian", "fp8_scale_sweep": False, "block_size": 8}
    _compare("llama", _config(FORMATS["int4-b16"], algorithm))


def test_local_hessian_one_hessian_block_broadcasts_over_padded_blocks():
    """moe: with INT4 blocks of 128 every layer has 16 inputs, one Hessian block, which
    Model Optimizer's einsum broadcasts over the 8 blocks of 16 of the padded row."""
    cfg = copy.deepcopy(mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG)
    cfg["algorithm"] = {"method": "local_hessian", "fp8_scale_sweep": False}
    _compare("moe", cfg)


def test_local_hessian_padded_blocks_fail_in_both():
    """INT4 blocks of 128 on 16 input features are padded: Model Optimizer's einsum fails on
    the padded view, and qruntime refuses the same weight (with rollback)."""
    cfg = _config(FORMATS["int4-b128"], {"method": "local_hessian", "fp8_scale_sweep": False})
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="einsum"):
            mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
        with pytest.raises(ValueError, match="padded"):
            qruntime.quantize(model, copy.deepcopy(cfg), loop)
    assert list(model.state_dict()) == list(before)


# ------------------------------------------------------------------------------ NVFP4 presets


@pytest.mark.parametrize("name", ["llama", "moe", "cnn"])
def test_nvfp4_fp8_sweep_preset_is_bit_exact(name, reference_fake_quant):
    _compare(name, copy.deepcopy(mtq.NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG))


@pytest.mark.parametrize("name", ["llama", "moe"])
def test_nvfp4_local_hessian_preset_is_bit_exact(name, reference_fake_quant):
    _compare(name, copy.deepcopy(mtq.NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG))


def test_nvfp4_multiplier_search_is_bit_exact(reference_fake_quant):
    """``fp8_scale_sweep: false`` on NVFP4-static weights: the multiplier grid per block, the
    shared global amax unchanged."""
    cfg = copy.deepcopy(mtq.NVFP4_W4A4_WEIGHT_MSE_FP8_SWEEP_CFG)
    cfg["algorithm"] = {"method": "mse", **OPTIONS["coarse"]}
    _compare("llama", cfg)


def test_nvfp4_dynamic_block_weights_search_their_global_amax(reference_fake_quant):
    """Dynamic-block NVFP4 weights have one (per-tensor) amax: the multiplier grid searches it,
    one fake quantization per candidate."""
    cfg = copy.deepcopy(mtq.NVFP4_DEFAULT_CFG)
    cfg["algorithm"] = {"method": "mse", **OPTIONS["coarse"]}
    _compare("llama", cfg)


# ------------------------------------------------------------------------------ property


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fmt=st.sampled_from(sorted(FORMATS)),
    method=st.sampled_from(["mse", "local_hessian"]),
    start=st.floats(0.1, 1.0),
    span=st.floats(0.1, 3.0),
    step=st.floats(0.05, 0.8),
)
def test_random_options_are_bit_exact(fmt, method, start, span, step):
    if method == "local_hessian" and fmt == "int4-b128":
        fmt = "int4-b16"  # padded blocks cannot be Hessian-weighted (see above)
    algorithm = {
        "method": method,
        "step_size": step,
        "start_multiplier": start,
        "stop_multiplier": start + span,
    }
    if method == "local_hessian":
        algorithm["fp8_scale_sweep"] = False
    _compare("llama", _config(FORMATS[fmt], algorithm))

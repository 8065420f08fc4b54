"""``nvfp4_act_headroom`` against Model Optimizer 0.47.0.

(a) The calibrator: ours and Model Optimizer's ``NVFP4ActHeadroomCalibrator`` are fed the same
    batches (hypothesis: shapes, dtypes, block sizes, zeros, magnitudes beyond the histogram's
    range, every percentile and rho); the amaxes are bit-identical, with the same dtype, and
    both warn or neither does.
(b) The algorithm on the zoo's llama, moe and vlm with NVFP4 W4A4 (``NVFP4_DEFAULT_CFG``) over a
    grid of anchor / upper percentiles and rho: every calibration buffer bit-exact, same dtype,
    same ``state_dict`` keys, same quantizer states, equal outputs. Model Optimizer's NVFP4 fake
    quant needs CUDA; its dynamic-block quantizers compute through the reference numerics here
    (the fixture of conftest.py), so calibration and every other quantizer still come
    from Model Optimizer.
"""

import copy
import warnings

import hypothesis.strategies as st
import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from hypothesis import given, settings
from modelopt.torch.quantization.calib import NVFP4ActHeadroomCalibrator as TheirCalibrator
from modelopt.torch.quantization.nn import TensorQuantizer as MoTensorQuantizer
from qruntime.calibrate import UnsupportedAlgorithmError, registered_methods
from qruntime.calibrate.headroom_calibrator import NVFP4ActHeadroomCalibrator

# ---------------------------------------------------------------------------------------- (a)

PERCENTILE = st.one_of(
    st.just(100.0),
    st.floats(min_value=0.0, max_value=100.0, exclude_min=True),
    st.sampled_from([0.001, 1.0, 50.0, 99.0, 99.99]),
)
RHO = st.one_of(
    st.floats(min_value=0.0, max_value=28672.0, exclude_min=True, exclude_max=True),
    st.sampled_from([1.0, 16384.0, 28671.99]),
)


@st.composite
def batches(draw):
    """Batches whose block amaxes span many octaves, some out of [-40, 40] in log2, with
    zeros (whole zero blocks included) and ragged last dims."""
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    top = 15 if dtype == torch.float16 else 60
    low = draw(st.integers(-60, top))
    span = draw(st.integers(0, 50))
    zeros = draw(st.sampled_from([0.0, 0.3, 0.9, 1.0]))
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        lead = draw(st.lists(st.integers(1, 3), max_size=2))
        shape = (*lead, draw(st.integers(1, 70)))
        exponent = (torch.rand(shape, generator=generator) * span + low).clamp(max=top)
        sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0)
        keep = torch.rand(shape, generator=generator) >= zeros
        out.append((sign * torch.exp2(exponent) * keep).to(dtype))
    return out


def _run(calibrator, data):
    for x in data:
        calibrator.collect(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        amax = calibrator.compute_amax()
    return amax, len(caught)


@settings(max_examples=150, deadline=None)
@given(
    data=batches(),
    block=st.sampled_from([4, 16, 32]),
    anchor=PERCENTILE,
    upper=PERCENTILE,
    rho=RHO,
)
def test_calibrator_is_bit_exact(data, block, anchor, upper, rho):
    kwargs = {"block_size": block, "anchor_percentile": anchor, "upper_percentile": upper}
    ours = NVFP4ActHeadroomCalibrator((2, 1), None, False, rho=rho, **kwargs)
    theirs = TheirCalibrator((2, 1), None, False, rho=rho, **kwargs)
    expected, their_warnings = _run(theirs, data)
    got, our_warnings = _run(ours, data)
    assert our_warnings == their_warnings
    if expected is None:
        assert got is None
        return
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected), (got, expected)
    ours.reset()
    assert ours.compute_amax() is None
    assert torch.equal(_run(ours, data)[0], expected)  # a reset forgets everything


@pytest.mark.parametrize("bad", [{"rho": 0.0}, {"rho": 28672.0}, {"anchor_percentile": 0.0}])
def test_calibrator_refuses_the_same_arguments(bad):
    with pytest.raises(ValueError):
        TheirCalibrator(**bad)
    with pytest.raises(ValueError):
        NVFP4ActHeadroomCalibrator(**bad)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_inf_are_refused(value):
    x = torch.ones(2, 32)
    x[1, 3] = value
    with pytest.raises(AssertionError):
        TheirCalibrator().collect(x)
    ours = NVFP4ActHeadroomCalibrator()
    ours.collect(x)  # refused once, when the amax is read (no device sync per batch)
    with pytest.raises(AssertionError, match="nan" if value != value else "inf"):
        ours.compute_amax()


# ---------------------------------------------------------------------------------------- (b)


def _config(algorithm, preset="NVFP4_DEFAULT_CFG"):
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = algorithm
    return cfg


def _both(name, cfg):
    """Model Optimizer's and our calibrated copies of zoo model ``name``, and the warnings
    each raised that mention the algorithm."""
    model, loop = zoo.build(name), zoo.forward_loop(name)
    seen = []
    for run in (mtq.quantize, qruntime.quantize):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen.append(run(copy.deepcopy(model), copy.deepcopy(cfg), loop))
        seen.append(sum("nvfp4_act_headroom" in str(w.message) for w in caught))
    ref, their_warnings, ours, our_warnings = seen
    return ref, ours, their_warnings, our_warnings


def _without_weight_calibrators(states):
    """Model Optimizer's mse and local_hessian leave their search calibrator in the weight
    quantizers (``calibrator: "MseCalibrator"``); that is the weight algorithm's business, not
    this one's, so those tests compare everything else."""
    out = copy.deepcopy(states)
    for name, state in out.items():
        if name.endswith("weight_quantizer") and isinstance(state["attributes"], dict):
            state["attributes"].pop("calibrator")
    return out


def _assert_same(name, ref, ours, weight_calibrators=True):
    expected = oracle.quantizer_states(ref)
    got = oracle.normalized_states(qruntime.quantizer_states(ours))
    if not weight_calibrators:
        expected, got = _without_weight_calibrators(expected), _without_weight_calibrators(got)
    assert got == expected
    oracle.assert_same_buffers(ref, ours)
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


GRID = [
    {},  # the defaults: anchor 1, upper 99.99, rho 16384
    {"upper_percentile": 100.0},
    {"anchor_percentile": 0.01, "upper_percentile": 99.0, "rho": 448.0},
    {"anchor_percentile": 50.0, "upper_percentile": 100.0, "rho": 3.0},  # no headroom: warns
    {"anchor_percentile": 100.0, "upper_percentile": 5.0, "rho": 28000.0},
]


@pytest.mark.parametrize("options", GRID, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("name", ["llama", "moe", "vlm"])
def test_headroom_with_max_weights_is_bit_exact(name, options, reference_fake_quant):
    algorithm = {
        "method": "nvfp4_act_headroom",
        **options,
        "weight_scale_algorithm": {"method": "max"},
    }
    ref, ours, their_warnings, our_warnings = _both(name, _config(algorithm))
    _assert_same(name, ref, ours)
    assert our_warnings == their_warnings
    headroom = [
        q.amax for n, q in ours.named_modules() if n.endswith("input_quantizer") and q.is_enabled
    ]
    plain = qruntime.quantize(zoo.build(name), _config("max"), zoo.forward_loop(name))
    max_amaxes = [
        q.amax for n, q in plain.named_modules() if n.endswith("input_quantizer") and q.is_enabled
    ]
    assert any(not torch.equal(a, b) for a, b in zip(headroom, max_amaxes, strict=True))


def test_no_nvfp4_input_is_plain_max_with_a_warning(reference_fake_quant):
    algorithm = {"method": "nvfp4_act_headroom"}
    ref, ours, their_warnings, our_warnings = _both("llama", _config(algorithm, "FP8_DEFAULT_CFG"))
    _assert_same("llama", ref, ours)
    assert their_warnings == our_warnings == 1
    plain = qruntime.quantize(
        zoo.build("llama"), _config("max", "FP8_DEFAULT_CFG"), zoo.forward_loop("llama")
    )
    for key, value in oracle.quantizer_buffers(plain).items():
        assert torch.equal(oracle.quantizer_buffers(ours)[key], value), key


def test_histogram_calibrator_on_nvfp4_inputs_is_replaced_as_in_modelopt(reference_fake_quant):
    """The swapped quantizers' own calibrator is never read: a ``"histogram"`` one (which max
    calibration refuses) works, and is what they keep afterwards."""
    cfg = _config({"method": "nvfp4_act_headroom"})
    nvfp4 = next(e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*input_quantizer")
    cfg["quant_cfg"].append(
        {"quantizer_name": "*input_quantizer", "cfg": {**nvfp4, "calibrator": "histogram"}}
    )
    ref, ours, _, _ = _both("llama", cfg)
    _assert_same("llama", ref, ours)


def test_sequential_nvfp4_input_is_refused_before_the_model_is_touched():
    """Model Optimizer raises NotImplementedError from inside calibration, after converting the
    model; qruntime refuses the plan first (docs/differences.md)."""
    cfg = _config({"method": "nvfp4_act_headroom"})
    nvfp4 = next(e["cfg"] for e in cfg["quant_cfg"] if e["quantizer_name"] == "*input_quantizer")
    cfg["quant_cfg"].append({"quantizer_name": "*input_quantizer", "cfg": [nvfp4, nvfp4]})
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    theirs = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NotImplementedError, match="SequentialQuantizer"):
            mtq.quantize(theirs, copy.deepcopy(cfg), loop)
    assert any(isinstance(m, MoTensorQuantizer) for m in theirs.modules())  # converted anyway
    ours = copy.deepcopy(model)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(UnsupportedAlgorithmError, match="sequential input quantizer"):
        qruntime.quantize(ours, copy.deepcopy(cfg), loop)
    assert not any(isinstance(m, qruntime.TensorQuantizer) for m in ours.modules())
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())


@pytest.mark.parametrize(
    "option", [{"moe_calib_experts_ratio": 0.5}, {"layerwise": {"enable": True}}]
)
def test_whole_model_options_in_the_weight_algorithm_are_refused_up_front(option):
    """Model Optimizer hands them to the weight calibration as arguments it does not take
    (TypeError, after converting the model); qruntime refuses the plan (docs/differences.md)."""
    cfg = _config(
        {"method": "nvfp4_act_headroom", "weight_scale_algorithm": {"method": "max", **option}}
    )
    model, loop = zoo.build("llama"), zoo.forward_loop("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), loop)
    ours = copy.deepcopy(model)
    with pytest.raises(UnsupportedAlgorithmError, match="in weight_scale_algorithm"):
        qruntime.quantize(ours, cfg, loop)
    assert not any(isinstance(m, qruntime.TensorQuantizer) for m in ours.modules())


WEIGHT_METHODS = [m for m in ("mse", "local_hessian") if m in registered_methods()]


@pytest.mark.skipif(not WEIGHT_METHODS, reason="no mse / local_hessian registered yet")
@pytest.mark.parametrize("method", WEIGHT_METHODS or ["none"])
def test_headroom_with_other_weight_algorithms_is_bit_exact(method, reference_fake_quant):
    algorithm = {
        "method": "nvfp4_act_headroom",
        "upper_percentile": 100.0,
        "weight_scale_algorithm": {"method": method, "fp8_scale_sweep": False},
    }
    ref, ours, _, _ = _both("llama", _config(algorithm))
    _assert_same("llama", ref, ours, weight_calibrators=False)

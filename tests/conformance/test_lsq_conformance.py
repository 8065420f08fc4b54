"""``lsq`` against Model Optimizer 0.47.0: the conversion, the forward and every gradient.

Each case quantizes deep copies of the same zoo model with both libraries, then compares the
``state_dict`` (the ``_amax`` buffer replaced by ``_amax_post`` / ``_amax_pre`` in the same
order, dtypes and values bit for bit), which tensors are parameters, the outputs on unseen data
and, after the same loss's backward pass, the gradient of every parameter — weights and learned
amaxes — bit for bit. INT static blocks run entirely in Model Optimizer on CPU. Its FP4 cast
needs Triton, so for NVFP4-static weights its ``fp4_cast_ste`` is qruntime's (the same E2M1
rounding and ``|x| <= 6`` mask) and its static NVFP4 calibration runs on qruntime's reference
numerics (``reference_fake_quant``); the step computation, the FP8 quantization of the steps,
their floors and all the autograd wiring stay Model Optimizer's.
"""

import copy
import sys
import types
import warnings

import modelopt.torch.quantization as mtq
import modelopt.torch.quantization.nn.modules.tensor_quantizer as mo_tq
import oracle
import pytest
import torch
import zoo
from qruntime.numerics.rotation import normalized_hadamard_transform
from qruntime.numerics.ste import fp4_cast_ste
from qruntime.quantizer.learned import LearnedAmaxQuantizer

INT4_B16 = {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}}
INT8_B8 = {"num_bits": 8, "block_sizes": {-1: 8, "type": "static"}}
NVFP4_STATIC = {
    "num_bits": (2, 1),
    "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
}


def _config(weight_cfg, algorithm, input_cfg=None):
    entries = [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": copy.deepcopy(weight_cfg)},
    ]
    if input_cfg is not None:
        entries.append({"quantizer_name": "*input_quantizer", "cfg": copy.deepcopy(input_cfg)})
    return {"quant_cfg": entries, "algorithm": {"method": "lsq", **algorithm}}


def _loss(model, name):
    out = model(*zoo.example_inputs(name, seed=2))
    out = out[0] if isinstance(out, tuple) else out
    return out.float().square().mean(), out


def _compare(name, cfg, model=None):
    model = zoo.build(name) if model is None else model
    ref, ours = oracle.quantize_both(model, cfg, zoo.forward_loop(name))
    expected, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    assert any(k.endswith("_amax_post") for k in got), "nothing was converted"
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
    ref_params = dict(ref.named_parameters())
    our_params = dict(ours.named_parameters())
    assert list(our_params) == list(ref_params)
    ref_loss, ref_out = _loss(ref, name)
    our_loss, our_out = _loss(ours, name)
    assert torch.equal(our_out, ref_out)
    ref_loss.backward()
    our_loss.backward()
    for key, param in ref_params.items():
        if param.grad is None:
            assert our_params[key].grad is None, key
            continue
        assert torch.equal(our_params[key].grad, param.grad), key
    return ref, ours


LEARNABLE = {
    "post": {},
    "pre": {"learnable_amax": "pre"},
    "both": {"learnable_amax": ["pre", "post"]},
    "frozen": {"learnable_amax": []},
    "tied": {"learnable_amax": ["pre", "post"], "tied_amax": True},
}


@pytest.mark.parametrize("learn", list(LEARNABLE))
@pytest.mark.parametrize("scale", ["max", "mse"])
def test_int4_blocks_on_llama_are_bit_exact(scale, learn):
    algorithm = {"scale_algorithm": {"method": scale}, **LEARNABLE[learn]}
    _, ours = _compare("llama", _config(INT4_B16, algorithm, input_cfg={"num_bits": 8}))
    converted = [m for m in ours.modules() if isinstance(m, LearnedAmaxQuantizer)]
    assert converted and all(q.tied_amax == (learn == "tied") for q in converted)


def test_default_scale_algorithm_is_mse_like_modelopt():
    _compare("llama", _config(INT8_B8, {}))


@pytest.mark.parametrize("name", ["cnn", "moe"])
def test_other_models_are_bit_exact(name):
    _compare(name, _config(INT4_B16, {"scale_algorithm": {"method": "max"}}))


def test_bfloat16_weights_keep_bfloat16_amaxes_like_modelopt():
    model = zoo.build("llama").to(torch.bfloat16)
    _, ours = _compare(
        "llama", _config(INT4_B16, {"scale_algorithm": {"method": "max"}}), model=model
    )
    q = next(m for m in ours.modules() if isinstance(m, LearnedAmaxQuantizer))
    assert q.amax_post.dtype == torch.bfloat16


_MO_STATIC_FAKE_QUANT = mo_tq.StaticBlockScaleQuantizer._fake_quantize


@pytest.fixture
def mo_fp4_cast(reference_fake_quant, monkeypatch):
    """Model Optimizer's LSQ FP4 cast (Triton only) replaced by qruntime's; its static NVFP4
    calibration on the reference numerics, its LSQ forward its own."""
    monkeypatch.setattr(mo_tq, "fp4_cast_ste", fp4_cast_ste)
    calibrating = mo_tq.StaticBlockScaleQuantizer._fake_quantize

    def fake_quantize(self, inputs):
        return (_MO_STATIC_FAKE_QUANT if self._lsq else calibrating)(self, inputs)

    monkeypatch.setattr(mo_tq.StaticBlockScaleQuantizer, "_fake_quantize", fake_quantize)


@pytest.mark.parametrize("learn", ["post", "both", "tied"])
@pytest.mark.parametrize("pre_scale", [True, False])
def test_nvfp4_static_steps_and_gradients_are_bit_exact(learn, pre_scale, mo_fp4_cast):
    algorithm = {
        "scale_algorithm": {"method": "max"},
        "quantize_pre_scale": pre_scale,
        **LEARNABLE[learn],
    }
    _compare("llama", _config(NVFP4_STATIC, algorithm))


def test_modelopt_cannot_run_its_fp4_cast_on_cpu_without_triton(reference_fake_quant, monkeypatch):
    """Why the FP4 cases borrow qruntime's cast (if this starts failing, drop the patch)."""
    original = mo_tq.StaticBlockScaleQuantizer._fake_quantize
    monkeypatch.setattr(
        mo_tq.StaticBlockScaleQuantizer,
        "_fake_quantize",
        lambda self, x: (_MO_STATIC_FAKE_QUANT if self._lsq else original)(self, x),
    )
    model = zoo.build("llama")
    cfg = _config(NVFP4_STATIC, {"scale_algorithm": {"method": "max"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), cfg, zoo.forward_loop("llama"))
    with pytest.raises(RuntimeError, match="triton"):
        _loss(ref, "llama")


@pytest.fixture
def hadamard(monkeypatch):
    """Model Optimizer rotates with the CUDA package ``fast_hadamard_transform``: on CPU it gets
    qruntime's normalized transform (the rotation is then the same on both sides; what the LSQ
    steps and gradients do around it stays Model Optimizer's)."""

    def hadamard_transform(x, scale):
        assert scale == x.shape[-1] ** -0.5
        return normalized_hadamard_transform(x, block_size=x.shape[-1])

    stand_in = types.ModuleType("fast_hadamard_transform")
    stand_in.hadamard_transform = hadamard_transform
    monkeypatch.setitem(sys.modules, "fast_hadamard_transform", stand_in)


@pytest.mark.parametrize("rotate", [True, {"enable": True, "mode": "rotate_back"}], ids=repr)
def test_rotated_weights_are_bit_exact(rotate, hadamard):
    weight = {**INT4_B16, "rotate": rotate}
    _compare("llama", _config(weight, {"scale_algorithm": {"method": "max"}, **LEARNABLE["both"]}))

"""Calibrators given in a config as a class or ``(class, args, kwargs)``, and forward loops
without an argument: qruntime against Model Optimizer 0.47.0.

Each side gets a subclass of its own max calibrator that records what it is fed; after
``quantize`` with max calibration the calibration buffers, the recorded calls and the outputs
are equal.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import zoo
from modelopt.torch.quantization.calib import MaxCalibrator as MoMaxCalibrator
from qruntime import Calibrator
from qruntime.calibrators import MaxCalibrator

W = "*weight_quantizer"
INPUTS = "*input_quantizer"


class OurRecordingMax(MaxCalibrator):
    calls: list[tuple[str, tuple[int, ...]]] = []

    def collect(self, x):
        OurRecordingMax.calls.append(("collect", tuple(x.shape)))
        super().collect(x)

    def compute_amax(self):
        OurRecordingMax.calls.append(("compute_amax", ()))
        return super().compute_amax()


class TheirRecordingMax(MoMaxCalibrator):
    calls: list[tuple[str, tuple[int, ...]]] = []

    def collect(self, x):
        TheirRecordingMax.calls.append(("collect", tuple(x.shape)))
        super().collect(x)

    def compute_amax(self):
        TheirRecordingMax.calls.append(("compute_amax", ()))
        return super().compute_amax()


def _config(weight_cfg, input_cfg):
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": W, "cfg": weight_cfg},
            {"quantizer_name": INPUTS, "cfg": input_cfg},
        ],
        "algorithm": "max",
    }


def _buffers(model):
    return {k: v for k, v in model.state_dict().items() if "_quantizer." in k}


def _compare(name, ours_cfg, theirs_cfg):
    model, loop = zoo.build(name), zoo.forward_loop(name)
    OurRecordingMax.calls.clear()
    TheirRecordingMax.calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), theirs_cfg, loop)
    ours = qruntime.quantize(copy.deepcopy(model), ours_cfg, loop)
    theirs_buffers, our_buffers = _buffers(ref), _buffers(ours)
    assert theirs_buffers and list(our_buffers) == list(theirs_buffers)
    for key, value in theirs_buffers.items():
        assert our_buffers[key].dtype == value.dtype, key
        assert torch.equal(our_buffers[key], value), key
    assert OurRecordingMax.calls == TheirRecordingMax.calls
    assert OurRecordingMax.calls, "the custom calibrator was not used"
    assert torch.equal(oracle.zoo_outputs(ours, name), oracle.zoo_outputs(ref, name))


def _forms(cls, weight_axis):
    return {
        "class": (cls, cls),
        "tuple": ((cls, (), {}), (cls, (), {})),
        "axis_kwarg": ((cls, (), {"axis": weight_axis}), (cls, (), {})),
        "positional": ((cls, (8, weight_axis, False), {}), (cls, (8, None, False))),
    }


@pytest.mark.parametrize("form", ["class", "tuple", "axis_kwarg", "positional"])
@pytest.mark.parametrize("name", ["llama", "cnn"])
def test_custom_max_calibrator_matches_modelopt(name, form):
    """Per-tensor inputs; weights per tensor for the forms that build the calibrator without an
    axis, per channel (axis 0) where the constructor names it."""
    weight_axis = 0 if form in ("axis_kwarg", "positional") else None

    def config(cls):
        weight_calib, input_calib = _forms(cls, weight_axis)[form]
        return _config(
            {"num_bits": 8, "axis": weight_axis, "calibrator": weight_calib},
            {"num_bits": 8, "axis": None, "calibrator": input_calib},
        )

    _compare(name, config(OurRecordingMax), config(TheirRecordingMax))


def test_calibrator_class_on_a_per_channel_quantizer_keeps_its_own_axis():
    def config(cls):
        return _config(
            {"num_bits": 8, "axis": 0, "calibrator": cls},
            {"num_bits": 8, "axis": None, "calibrator": "max"},
        )

    _compare("llama", config(OurRecordingMax), config(TheirRecordingMax))


def test_modelopt_calibrators_satisfy_the_protocol():
    assert isinstance(MoMaxCalibrator(8, None, False), Calibrator)
    assert isinstance(MaxCalibrator(), Calibrator)


def test_forward_loop_without_argument_warns_and_calibrates_like_modelopt():
    name = "llama"
    model, batches = zoo.build(name), [zoo.example_inputs(name, seed=s) for s in (0, 1)]
    target: dict = {}

    def loop():
        for batch in batches:
            target["model"](*batch)

    cfg = copy.deepcopy(mtq.INT8_DEFAULT_CFG)
    ref = copy.deepcopy(model)
    target["model"] = ref
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        mtq.quantize(ref, copy.deepcopy(cfg), loop)
    assert any(issubclass(w.category, DeprecationWarning) for w in theirs)
    ours = copy.deepcopy(model)
    target["model"] = ours
    with pytest.deprecated_call():
        qruntime.quantize(ours, copy.deepcopy(cfg), loop)
    theirs_buffers, our_buffers = _buffers(ref), _buffers(ours)
    assert theirs_buffers and list(our_buffers) == list(theirs_buffers)
    for key, value in theirs_buffers.items():
        assert torch.equal(our_buffers[key], value), key

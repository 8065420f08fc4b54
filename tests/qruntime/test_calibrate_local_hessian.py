"""local_hessian calibration: the Hessians from the layer inputs, the Hessian-weighted error,
its two passes (weight quantizers off in the second, restored after), warnings, refusal without
data, rollback, and pass 2 skipped when nothing would use it."""

import copy
import warnings

import pytest
import qruntime
import torch
from calibration_cases import batch as _data
from calibration_cases import two_batches as _loop
from calibration_cases import weight_input_config as _config
from qconfig.algorithm_methods import LocalHessianCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for
from qruntime.calibrate.hessian import HessianAccumulator, HessianError
from torch import nn

NVFP4_STATIC = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}
NOSWEEP = {"method": "local_hessian", "fp8_scale_sweep": False}


class Net(nn.Module):
    """fc1 sees the data (40 inputs, not a multiple of 16), fc2 sees 32 features."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(40, 32)
        self.fc2 = nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _net():
    torch.manual_seed(0)
    return Net()


def test_capabilities():
    caps = algorithm_for(LocalHessianCalibConfig()).capabilities
    assert caps.needs_forward_data and not caps.writes_weights
    assert caps.sync_points == ("amax", "global_amax", "statistics")


def test_accumulated_hessian_is_the_block_diagonal_of_xtx_over_tokens():
    acc = HessianAccumulator(cout=3, cin=8, block_size=4)
    xs = [torch.randn(2, 5, 8), torch.randn(7, 8)]
    for x in xs:
        acc.accumulate(x)
    flat = torch.cat([x.reshape(-1, 8) for x in xs]).double()
    full = flat.T @ flat / flat.shape[0]
    expected = torch.stack([full[:4, :4], full[4:, 4:]])
    assert acc.tokens == 17
    torch.testing.assert_close(acc.normalized().double(), expected, rtol=1e-6, atol=1e-6)


def test_indivisible_input_features_collect_nothing():
    acc = HessianAccumulator(cout=3, cin=10, block_size=4)
    acc.accumulate(torch.randn(5, 10))
    assert not acc.enabled and acc.normalized() is None and acc.tokens == 0


def test_hessian_error_is_dwt_h_dw_per_block_on_every_element():
    h = torch.stack([torch.eye(2) * 2, torch.tensor([[1.0, 1.0], [1.0, 1.0]])])  # 2 blocks of 2
    error = HessianError(h, cout=1, view_shape=(1, 4))
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    xq = torch.tensor([[0.0, 2.0, 2.0, 3.0]])  # dw = [1, 0 | 1, 1]
    # block 0: [1, 0] 2I [1, 0]^T = 2; block 1: [1, 1] J [1, 1]^T = 4
    assert torch.equal(error(x, xq), torch.tensor([[2.0, 2.0, 4.0, 4.0]]))
    # two candidates stacked along rows give the two rows' errors
    both = error(torch.cat([x, x]), torch.cat([xq, x]))
    assert torch.equal(both, torch.tensor([[2.0, 2.0, 4.0, 4.0], [0.0, 0.0, 0.0, 0.0]]))


def test_padded_quantization_blocks_cannot_be_weighted():
    with pytest.raises(ValueError, match="padded"):
        HessianError(torch.zeros(2, 16, 16), cout=4, view_shape=(4, 64))


def test_without_data_it_is_refused_untouched():
    model = _net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedAlgorithmError, match="needs calibration data"):
        qruntime.quantize(model, _config({"num_bits": 8, "axis": 0}, algorithm=NOSWEEP))
    assert list(model.state_dict()) == list(before)
    assert type(model.fc1) is nn.Linear


def test_second_pass_sees_unquantized_weights_and_everything_is_restored():
    seen = []
    cfg = _config({"num_bits": 4, "axis": 0}, {"num_bits": 8}, algorithm=NOSWEEP)

    def loop(model):
        seen.append(model.fc1.weight_quantizer.is_enabled)
        _loop(model)

    model = qruntime.quantize(_net(), cfg, loop)
    assert seen == [True, False]  # max pass, then the Hessian pass with weights off
    assert model.fc1.weight_quantizer.is_enabled and model.fc2.weight_quantizer.is_enabled
    assert not model.fc1._forward_pre_hooks and not model.fc2._forward_pre_hooks


def test_hessian_weighting_changes_the_result_only_where_a_hessian_exists():
    """fc1 (40 inputs) gets the plain squared error, with a warning; fc2 the Hessian error."""
    weights = {"num_bits": 4, "axis": 0}
    with pytest.warns(UserWarning, match=r"not divisible by block_size 16.*fc1 \(40\)"):
        hessian = qruntime.quantize(_net(), _config(weights, algorithm=NOSWEEP), _loop)
    plain = qruntime.quantize(_net(), _config(weights, algorithm="mse"), _loop)
    assert torch.equal(hessian.fc1.weight_quantizer.amax, plain.fc1.weight_quantizer.amax)
    assert not torch.equal(hessian.fc2.weight_quantizer.amax, plain.fc2.weight_quantizer.amax)


def test_the_searched_fc2_minimises_the_hessian_weighted_error():
    """Independent check: among the grid, the chosen per-channel multiplier of fc2 has the
    smallest sum over blocks of dw^T H dw (H from fc2's inputs, computed here in float64)."""
    weights = {"num_bits": 4, "axis": 0}
    model = qruntime.quantize(_net(), _config(weights, algorithm=NOSWEEP), _loop)
    maxed = qruntime.quantize(_net(), _config(weights), _loop)
    with torch.no_grad():
        inputs = torch.cat([torch.relu(maxed.fc1(_data(s))).reshape(-1, 32) for s in (0, 1)])
    h = torch.stack([inputs[:, i : i + 16].T @ inputs[:, i : i + 16] for i in (0, 16)]).double()
    w = maxed.fc2.weight.detach().double()
    amax0 = maxed.fc2.weight_quantizer.amax.double()
    chosen = model.fc2.weight_quantizer.amax.double()

    def loss(amax):
        scale = 7 / amax
        dw = (w - torch.clamp(torch.round(w * scale), -8, 7) / scale).view(8, 2, 16)
        return torch.einsum("cnb,nbd,cnd->c", dw, h, dw)

    grid = torch.linspace(0.25, 4.0, 39, dtype=torch.float64)
    best = torch.stack([loss(amax0 * m) for m in grid]).min(0).values
    torch.testing.assert_close(loss(chosen), best, rtol=1e-4, atol=0)


def test_default_sweep_without_nvfp4_weights_skips_the_second_pass():
    calls = []

    def loop(model):
        calls.append(1)
        _loop(model)

    algorithm = {"method": "local_hessian"}
    with pytest.warns(UserWarning, match="2 other weight quantizer"):
        model = qruntime.quantize(
            _net(), _config({"num_bits": 8, "axis": 0}, algorithm=algorithm), loop
        )
    maxed = qruntime.quantize(_net(), _config({"num_bits": 8, "axis": 0}), _loop)
    assert len(calls) == 1  # Model Optimizer runs the Hessian pass anyway; nothing uses it
    assert torch.equal(model.fc2.weight_quantizer.amax, maxed.fc2.weight_quantizer.amax)


def test_nvfp4_static_sweep_uses_the_hessian():
    algorithm = {"method": "local_hessian"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = qruntime.quantize(_net(), _config(NVFP4_STATIC, algorithm=algorithm), _loop)
    plain = qruntime.quantize(
        _net(), _config(NVFP4_STATIC, algorithm={"method": "mse", "fp8_scale_sweep": True}), _loop
    )
    assert torch.equal(
        weighted.fc2.weight_quantizer.global_amax, plain.fc2.weight_quantizer.global_amax
    )
    assert not torch.equal(weighted.fc2.weight_quantizer.amax, plain.fc2.weight_quantizer.amax)


def test_a_failing_second_pass_leaves_the_model_unchanged():
    model = _net()
    before = copy.deepcopy(model.state_dict())
    calls = []

    def loop(m):
        calls.append(1)
        _loop(m)
        if len(calls) == 2:
            raise RuntimeError("second pass failed")

    with pytest.raises(RuntimeError, match="second pass failed"):
        qruntime.quantize(model, _config({"num_bits": 8, "axis": 0}, algorithm=NOSWEEP), loop)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert type(model.fc1) is nn.Linear and not model.fc1._forward_pre_hooks


def test_debug_keeps_the_accumulators_by_layer():
    algorithm = {**NOSWEEP, "debug": True}
    model = qruntime.quantize(
        _net(), _config({"num_bits": 8, "axis": 0}, algorithm=algorithm), _loop
    )
    kept = model._local_hessian_accumulators
    assert set(kept) == {"fc1", "fc2"}
    assert kept["fc2"].normalized().shape == (2, 16, 16)

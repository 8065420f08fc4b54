"""mse calibration and the weight amax search: hand-derived results, the batched search against a
one-candidate-at-a-time reference, chunking, no data, the fp8_scale_sweep warning, refusals and
rollback."""

import copy
import warnings

import pytest
import qruntime
import torch
import torch.nn.functional as F
from calibration_cases import two_batches as _loop
from calibration_cases import weight_input_config as _config
from qconfig.algorithm_methods import MseCalibConfig
from qruntime.calibrate import UnsupportedAlgorithmError, algorithm_for
from qruntime.calibrate.search import (
    fp8_scale_candidates,
    multiplier_candidates,
    search,
    weight_view,
)
from qruntime.calibrators import MaxCalibrator
from qruntime.numerics import fake_quant
from torch import nn

NVFP4_STATIC = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)}}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(40, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def _net():
    torch.manual_seed(0)
    return Net()


def _row(values, algorithm):
    """A 1 x n Linear with the given weight, INT2 per-tensor weight quantizer, no data."""
    model = nn.Sequential(nn.Linear(len(values), 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([values]))
    return qruntime.quantize(model, _config({"num_bits": 2}, algorithm=algorithm))


# ---------------------------------------------------------------------------- hand-derived


def test_best_multiplier_of_a_one_by_four_weight():
    """INT2 has the levels {-2, -1, 0, 1} x amax; w = [1, 1, 1, 4], max amax 4.

    m = 0.25 (amax 1): the 4 clips to 1, loss 9; m = 0.5 (amax 2): the ones round to 0 (a tie,
    to even), the 4 clips to 2, loss 3 + 4 = 7; m = 0.75 (amax 3): ones -> 0, 4 -> 3, loss 4;
    m = 1 (amax 4): ones -> 0, 4 -> 4, loss 3. So the grid 0.25:0.25:1 picks 1 and the grid
    0.25:0.25:0.75 picks 0.75.
    """
    grid = {"method": "mse", "start_multiplier": 0.25, "step_size": 0.25}
    full = _row([1.0, 1.0, 1.0, 4.0], {**grid, "stop_multiplier": 1.0})
    assert torch.equal(full[0].weight_quantizer.amax, torch.tensor(4.0))
    short = _row([1.0, 1.0, 1.0, 4.0], {**grid, "stop_multiplier": 0.75})
    assert torch.equal(short[0].weight_quantizer.amax, torch.tensor(3.0))


def test_default_grid_excludes_one_and_picks_its_nearest_neighbour():
    """For 1/(4m) < 0.5 < 1/m < 1.5 the loss is 3 + (4 - 4m)^2: the grid point nearest 1 wins;
    1.0 itself is not on the default grid (39 points from 0.25 to 4)."""
    grid = multiplier_candidates(0.25, 4.0, 0.1)
    assert len(grid) == 39 and not bool((grid == 1.0).any())
    nearest = grid[(grid - 1).abs().argmin()]
    assert 1.0 < float(nearest) < 1.05
    model = _row([1.0, 1.0, 1.0, 4.0], {"method": "mse"})
    assert torch.equal(model[0].weight_quantizer.amax, torch.tensor(4.0) * nearest)


def test_fp8_scale_candidates_are_the_positive_finite_e4m3_values():
    c = fp8_scale_candidates()
    assert len(c) == 126
    e4m3 = (c * 448).to(torch.float8_e4m3fn).float()
    assert torch.equal(e4m3, c * 448)
    assert float(c.max()) == 1.0 and c.min() == torch.tensor(2.0**-9) / 448
    assert bool((c[1:] > c[:-1]).all())


# ---------------------------------------------------------------------------- the engine


def _reference_search(view, candidates, amax_of, error=None):
    """Model Optimizer's loop, one candidate at a time: fake quant of the view, error, sum
    over the reduced dims, argmin over the stacked losses (first index on ties)."""
    spec = view.spec.replace(enable=True)
    x = view.plan.from_blocks(view.x) if view.plan is not None else view.x
    losses = []
    for c in candidates:
        amax = amax_of(c.reshape(1))[0]
        y = fake_quant(x, spec, amax, global_amax=view.global_amax)
        y = view.plan.to_blocks(y) if view.plan is not None else y
        err = F.mse_loss(view.x, y, reduction="none") if error is None else error(view.x, y)
        dims = list(range(view.x.dim())) if view.reduce is None else list(view.reduce)
        losses.append(err.sum(dim=dims))
    return candidates[torch.argmin(torch.stack(losses), dim=0)]


def _quantizer(weight_cfg, shape=(48, 64), seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(shape[1], shape[0], bias=False))
    with torch.no_grad():
        model[0].weight.mul_(torch.rand(shape[0], 1) * 3)  # channels of different ranges
    model = qruntime.quantize(model, _config(weight_cfg))
    return model[0].weight_quantizer, model[0].weight


SEARCH_CASES = {
    "int8-channel": {"num_bits": 8, "axis": 0},
    "int8-tensor": {"num_bits": 8},
    "int4-b16": {"num_bits": 4, "block_sizes": {-1: 16, "type": "static"}},
    "int4-b24-padded": {"num_bits": 4, "block_sizes": {-1: 24, "type": "static"}},
    "fp8-2d-blocks": {"num_bits": (4, 3), "block_sizes": {-1: 16, -2: 16, "type": "static"}},
    "fp8-axis1": {"num_bits": (4, 3), "axis": 1},
    "nvfp4-static": NVFP4_STATIC,
}


def _multiplied(amax):
    def of(c):
        return amax.float().unsqueeze(0) * c.view(-1, *([1] * amax.dim()))

    return of


@pytest.mark.parametrize("case", list(SEARCH_CASES))
def test_batched_search_equals_the_candidate_loop_for_every_chunking(case):
    q, weight = _quantizer(SEARCH_CASES[case])
    view = weight_view(q, weight)
    candidates = multiplier_candidates(0.3, 2.5, 0.07)
    amax_of = _multiplied(view.amax)
    expected = _reference_search(view, candidates, amax_of)
    for batch in (1, 300, 3000, 10**9):
        got = search(view, candidates, amax_of, batch_elements=batch)
        assert got.shape == expected.shape
        assert torch.equal(got, expected), batch


def test_fp8_sweep_equals_the_candidate_loop():
    q, weight = _quantizer(NVFP4_STATIC, shape=(24, 48))
    view = weight_view(q, weight)
    g = q.global_amax.float()

    def amax_of(c):
        return (g * c).view(-1, 1, 1).expand(-1, *view.amax.shape)

    candidates = fp8_scale_candidates()
    expected = _reference_search(view, candidates, amax_of)
    for batch in (300, 5000, 10**9):
        assert torch.equal(search(view, candidates, amax_of, batch_elements=batch), expected)


def test_per_tensor_sums_are_those_of_the_loop_with_several_threads():
    """A single loss per candidate over >= 32768 elements is split between threads by torch:
    the search takes those sums one candidate at a time, as the loop does."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for cfg in ({"num_bits": 4}, {"num_bits": (4, 3)}):
            q, weight = _quantizer(cfg, shape=(160, 256))
            view = weight_view(q, weight)
            candidates = multiplier_candidates(0.5, 1.5, 0.01)
            amax_of = _multiplied(view.amax)
            expected = _reference_search(view, candidates, amax_of)
            assert torch.equal(search(view, candidates, amax_of), expected)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------- the algorithm


def test_capabilities_and_registration():
    caps = algorithm_for(MseCalibConfig()).capabilities
    assert not caps.needs_forward_data and not caps.writes_weights
    assert caps.sync_points == ("amax", "global_amax")


def test_without_data_weights_are_searched_and_activations_stay_dynamic():
    cfg = _config({"num_bits": 4, "axis": 0}, {"num_bits": 8}, algorithm={"method": "mse"})
    model = qruntime.quantize(_net(), cfg)
    maxed = qruntime.quantize(_net(), _config({"num_bits": 4, "axis": 0}, {"num_bits": 8}))
    assert model.fc1.input_quantizer.amax is None
    assert not torch.equal(model.fc1.weight_quantizer.amax, maxed.fc1.weight_quantizer.amax)


def test_activations_keep_their_max_amax():
    cfg = _config({"num_bits": 4, "axis": 0}, {"num_bits": 8}, algorithm={"method": "mse"})
    model = qruntime.quantize(_net(), cfg, _loop)
    maxed = qruntime.quantize(_net(), _config({"num_bits": 4, "axis": 0}, {"num_bits": 8}), _loop)
    assert torch.equal(model.fc1.input_quantizer.amax, maxed.fc1.input_quantizer.amax)


def test_fp8_scale_sweep_warns_once_and_leaves_other_weights_at_max():
    algorithm = {"method": "mse", "fp8_scale_sweep": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = qruntime.quantize(
            _net(), _config({"num_bits": 8, "axis": 0}, algorithm=algorithm), lint="off"
        )
    ours = [w for w in caught if "fp8_scale_sweep" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, UserWarning)
    assert "2 other weight quantizer(s)" in str(ours[0].message)
    assert "fp8_scale_sweep: false" in str(ours[0].message)
    maxed = qruntime.quantize(_net(), _config({"num_bits": 8, "axis": 0}))
    assert torch.equal(model.fc1.weight_quantizer.amax, maxed.fc1.weight_quantizer.amax)


def test_fp8_scale_sweep_on_nvfp4_static_keeps_the_global_amax_and_warns_nothing():
    algorithm = {"method": "mse", "fp8_scale_sweep": True}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = qruntime.quantize(_net(), _config(NVFP4_STATIC, algorithm=algorithm), lint="off")
    maxed = qruntime.quantize(_net(), _config(NVFP4_STATIC))
    q, ref = model.fc1.weight_quantizer, maxed.fc1.weight_quantizer
    assert torch.equal(q.global_amax, ref.global_amax)
    assert q.amax.dtype == torch.float32 and not torch.equal(q.amax, ref.amax)
    # every block amax is global * (an E4M3 value / 448)
    ratio = (q.amax / q.global_amax * 448).flatten()
    assert torch.equal(ratio.to(torch.float8_e4m3fn).float(), ratio)


def test_the_configured_calibrator_stays_so_the_model_can_be_calibrated_again():
    """docs/differences.md: Model Optimizer leaves its spent search calibrator on the quantizer."""
    cfg = _config({"num_bits": 4, "axis": 0}, algorithm={"method": "mse"})
    model = qruntime.quantize(_net(), cfg, _loop)
    q = model.fc1.weight_quantizer
    assert type(q.calibrator) is MaxCalibrator
    assert qruntime.quantizer_states(model)["fc1.weight_quantizer"]["attributes"]["calibrator"] == (
        "max"
    )
    both = _config({"num_bits": 4, "axis": 0}, algorithm=[{"method": "mse"}, {"method": "max"}])
    again = qruntime.quantize(_net(), both, _loop)
    maxed = qruntime.quantize(_net(), _config({"num_bits": 4, "axis": 0}), _loop)
    assert torch.equal(again.fc1.weight_quantizer.amax, maxed.fc1.weight_quantizer.amax)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"step_size": None}, "step_size must be a number"),
        ({"start_multiplier": 2.0, "stop_multiplier": 1.0}, "no multiplier"),
        ({"start_multiplier": 1.1, "stop_multiplier": 1.0, "step_size": 0.1}, "no multiplier"),
    ],
)
def test_options_without_a_grid_are_refused_untouched(options, match):
    model = _net()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedAlgorithmError, match=match):
        qruntime.quantize(model, _config({"num_bits": 8}, algorithm={"method": "mse", **options}))
    assert list(model.state_dict()) == list(before)
    assert not any(isinstance(m, qruntime.TensorQuantizer) for m in model.modules())


def test_a_grid_of_one_multiplier_runs():
    """ceil((stop - start) / step) + 1 == 1 when start is above stop by less than a step."""
    algorithm = {"method": "mse", "start_multiplier": 1.05, "stop_multiplier": 1.0}
    model = qruntime.quantize(_net(), _config({"num_bits": 8, "axis": 0}, algorithm=algorithm))
    maxed = qruntime.quantize(_net(), _config({"num_bits": 8, "axis": 0}))
    expected = maxed.fc1.weight_quantizer.amax * torch.tensor(1.05)
    assert torch.equal(model.fc1.weight_quantizer.amax, expected)


@pytest.mark.parametrize(
    ("weight_cfg", "match"),
    [
        ({"num_bits": 8, "bias": {-1: None, "type": "static"}}, "affine `bias`"),
        ({"num_bits": 8, "axis": 0, "fake_quant": False}, "real quantization"),
    ],
)
def test_weights_the_search_cannot_reproduce_are_refused_untouched(weight_cfg, match):
    model = _net()
    cfg = _config(weight_cfg, algorithm="mse")
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsupportedAlgorithmError, match=match):
        qruntime.quantize(model, cfg, _loop)
    assert list(model.state_dict()) == list(before)


def test_a_failing_forward_loop_leaves_the_model_unchanged():
    model = _net()
    before = copy.deepcopy(model.state_dict())

    def broken(m):
        m(torch.randn(2, 40))
        raise RuntimeError("data loader died")

    with pytest.raises(RuntimeError, match="data loader died"):
        qruntime.quantize(model, _config({"num_bits": 8, "axis": 0}, algorithm="mse"), broken)
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert type(model.fc1) is nn.Linear

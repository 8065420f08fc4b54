"""Max calibration of recurrent and batch-norm modules against Model Optimizer 0.47.0, on
hypothesis-drawn shapes, dtypes, presets and calibration data.

For every draw both libraries quantize their own copy of the same model with the same config and
forward loop; then every quantizer's state, every ``state_dict`` entry (weights and calibration
buffers, bit for bit) and the outputs on *unseen* inputs must agree. The draws reach what the
zoo models do not: more than two stacked layers (the input quantizers of layers >= 1 only see
the previous layer's output), GRU and plain RNN cells, LSTM projections under a sequential
(W4A8) weight quantizer, more time steps than the max calibrator keeps before folding, packed
sequences, and per-channel batch-norm inputs in reduced precision. Formats Model Optimizer can
only run on CUDA (NVFP4, MX) are computed by the reference numerics on its side
(``reference_fake_quant``), so there the comparison covers structure and calibration.

Both models are put in eval mode before the unseen forward: Model Optimizer ends calibration
with ``model.train(was_training)`` (docs/differences.md, row 19), which would otherwise switch
batch norms to batch statistics on its side only.
"""

import contextlib
import copy
import warnings

import modelopt.torch.quantization as mtq
import oracle
import pytest
import qruntime
import torch
import torch._VF as _VF
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qruntime.numerics.nvfp4 import fake_quant_nvfp4_static, nvfp4_static_block_scales
from qruntime.quantizer import SequentialQuantizer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PRESETS = [
    "INT8_DEFAULT_CFG",
    "FP8_DEFAULT_CFG",
    "W4A8_AWQ_BETA_CFG",
    "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
    "NVFP4_DEFAULT_CFG",
    "MXFP8_DEFAULT_CFG",
    "NVFP4_FOUR_OVER_SIX_CFG",
]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
#: The reference NVFP4/MX numerics take fp32/fp16/bf16 only (as Model Optimizer's kernels).
CUDA_ONLY = {"NVFP4_DEFAULT_CFG", "MXFP8_DEFAULT_CFG", "NVFP4_FOUR_OVER_SIX_CFG"}
VF_CALLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
BATCH_NORM_PARENTS = {"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d"}


def _config(preset: str, input_axis: object = "keep", batch_norm: bool = False) -> dict:
    """``preset`` with max calibration; optionally per-channel or biased INT8 inputs, and batch
    norms enabled."""
    cfg = copy.deepcopy(getattr(mtq, preset))
    cfg["algorithm"] = "max"
    if batch_norm:
        cfg["quant_cfg"] = [
            e for e in cfg["quant_cfg"] if e.get("parent_class") not in BATCH_NORM_PARENTS
        ]
    if input_axis == "bias":  # INT8 inputs with a static running-mean bias (order-sensitive)
        bias = {-1: None, "type": "static", "method": "mean"}
        cfg["quant_cfg"].append(
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "bias": bias}}
        )
    elif input_axis != "keep":
        cfg["quant_cfg"].append(
            {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": input_axis}}
        )
    return cfg


@contextlib.contextmanager
def _vf_restored():
    """Model Optimizer's RNN forward swaps ``torch._VF.<mode>`` without a ``finally``, so a
    failing forward would leave every later RNN (ours included) running its replacement: the
    originals are put back whatever happens."""
    saved = {name: getattr(_VF, name) for name in VF_CALLS}
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(_VF, name, fn)


def _modelopt(model: nn.Module, cfg: dict, forward_loop) -> nn.Module:
    """Model Optimizer's quantization of a copy of ``model`` (``_VF`` restored after)."""
    with _vf_restored(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)


def _first(out):
    while isinstance(out, tuple):
        out = out[0]
    return out.data if hasattr(out, "batch_sizes") else out


def _compare(model: nn.Module, cfg: dict, batches: list, unseen, autocast: bool = False) -> None:
    """Both quantize ``model``; same states, same state dicts, same outputs on ``unseen``.

    A batch is one input or a list of arguments (a PackedSequence is a tuple); with ``autocast`` the loop runs under CPU
    bfloat16 autocast (mixed dtypes reach the calibrators)."""

    def forward_loop(m):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for batch in batches:
                m(*batch) if isinstance(batch, list) else m(batch)

    try:
        ref = _modelopt(model, cfg, forward_loop)
    except RuntimeError:
        # Model Optimizer refuses (a per-channel amax or bias whose shape changes between the
        # input and the hidden state, a static bias on a quantizer that saw no data): qruntime
        # must refuse too (in its own words), not calibrate something else.
        with pytest.raises(RuntimeError):
            qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
    oracle.assert_same_model(ref, ours)
    assert oracle.quantizer_buffers(ref), "nothing was calibrated"
    ref.eval()
    ours.eval()
    with torch.no_grad():
        try:
            with _vf_restored():
                expected = _first(ref(unseen))
        except AssertionError:
            # Model Optimizer's packed-sequence forward asserts (hidden state rows vs.
            # batch_sizes[0]) when a per-row static bias or amax broadcast a shorter step up to
            # the calibration batch's rows; qruntime refuses that step in words (kept
            # difference, test_packed_rnn_per_row_calibration_is_refused)
            with pytest.raises(RuntimeError, match="RNN input quantizer turned"):
                ours(unseen)
            return
        got = _first(ours(unseen))
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


@st.composite
def recurrent_cases(draw):
    cls = draw(st.sampled_from([nn.LSTM, nn.GRU, nn.RNN]))
    layers = draw(st.integers(1, 3))
    bidirectional = draw(st.booleans())
    features = draw(st.sampled_from([4, 8]))
    hidden = draw(st.sampled_from([4, 8]))
    proj = draw(st.sampled_from([0, 0, 2])) if cls is nn.LSTM and hidden > 2 else 0
    kwargs = {"proj_size": proj} if proj else {}
    bias = draw(st.booleans())
    batch_first = draw(st.booleans())
    dtype = draw(st.sampled_from(DTYPES))
    steps = draw(st.sampled_from([2, 5, 19]))
    packed = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    module = cls(
        features,
        hidden,
        num_layers=layers,
        bidirectional=bidirectional,
        bias=bias,
        batch_first=batch_first,
        **kwargs,
    ).to(dtype)
    return module, features, steps, batch_first, packed, dtype


def _initial_state(module: nn.RNNBase, dtype, seed: int):
    """A random ``h0`` (and ``c0``) for a batch of 3."""
    g = torch.Generator().manual_seed(seed)
    stacks = module.num_layers * (2 if module.bidirectional else 1)
    h_size = module.proj_size or module.hidden_size
    h0 = torch.randn(stacks, 3, h_size, generator=g).to(dtype)
    if isinstance(module, nn.LSTM):
        return h0, torch.randn(stacks, 3, module.hidden_size, generator=g).to(dtype)
    return h0


def _sequences(features, steps, batch_first, packed, dtype, scale, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (3, steps, features) if batch_first else (steps, 3, features)
    x = (torch.randn(shape, generator=g) * scale).to(dtype)
    if not packed:
        return x
    lengths = [steps, max(1, steps - 1), max(1, steps // 2)]
    return pack_padded_sequence(x, lengths, batch_first=batch_first)


def _gru_without_bias():
    torch.manual_seed(0)
    return nn.GRU(4, 4, bias=False)


@SETTINGS
@example(  # Model Optimizer's packed forward asserts on the unseen batch (found by CI): a
    # per-row static bias of 3 rows broadcasts the 1-row steps; qruntime refuses them
    case=(_gru_without_bias(), 4, 2, False, True, torch.float32),
    preset="INT8_DEFAULT_CFG",
    scale=0.5,
    batches=1,
    input_axis="bias",
    initial=False,
    autocast=False,
)
@given(
    case=recurrent_cases(),
    preset=st.sampled_from(PRESETS),
    scale=st.sampled_from([0.5, 3.0]),
    batches=st.integers(1, 2),
    input_axis=st.sampled_from(["keep", "keep", -1, "bias"]),
    initial=st.booleans(),
    autocast=st.booleans(),
)
def test_recurrent_max_calibration_matches_modelopt(
    reference_fake_quant, case, preset, scale, batches, input_axis, initial, autocast
):
    module, features, steps, batch_first, packed, dtype = case
    if preset in CUDA_ONLY and dtype == torch.float64:
        dtype = torch.float32
        module = module.to(dtype)
    data = [
        _sequences(features, steps, batch_first, packed, dtype, scale, seed)
        for seed in range(batches)
    ]
    if initial:
        data = [[x, _initial_state(module, dtype, 7 + i)] for i, x in enumerate(data)]
    unseen = _sequences(features, steps, batch_first, packed, dtype, 2 * scale, 99)
    autocast = autocast and dtype == torch.float32
    _compare(module, _config(preset, input_axis), data, unseen, autocast)


@SETTINGS
@given(
    dims=st.integers(1, 3),
    channels=st.sampled_from([1, 3, 4]),
    dtype=st.sampled_from(DTYPES),
    input_axis=st.sampled_from(["keep", None, 1, -1]),
    preset=st.sampled_from(PRESETS),
    seed=st.integers(0, 2**16),
)
def test_batch_norm_max_calibration_matches_modelopt(
    reference_fake_quant, dims, channels, dtype, input_axis, preset, seed
):
    if preset in CUDA_ONLY and dtype == torch.float64:
        dtype = torch.float32
    torch.manual_seed(seed)
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels)
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.25, 4.0)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    # a Linear over the last (spatial) dim gives the norm a computed input and the config a
    # weight to quantize (Model Optimizer's NVFP4 Conv3d needs CUDA)
    model = nn.Sequential(nn.Linear(3, 3), norm).to(dtype).eval()
    shape = (2, channels, *([3] * dims))
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(shape, generator=g) * 3).to(dtype) for _ in range(2)]
    unseen = (torch.randn(shape, generator=g) * 5).to(dtype)
    _compare(model, _config(preset, input_axis, batch_norm=True), data, unseen)


# ------------------------------------------------------------------ static NVFP4, four-over-six
#
# Model Optimizer's static NVFP4 runs only as a CUDA/Triton kernel, so the oracle here is its
# formula (``compute_fp4_scales`` + ``nvfp4_scalar_quant``), re-derived in float64 with every
# float32 rounding of its torch/Triton code made explicit (one float64 operation rounded to
# float32 is the correctly rounded float32 operation for + - * /). Its block amaxes are CUDA
# tensors there, and torch's CUDA kernel divides a tensor by a Python number as a
# multiplication by the float32 reciprocal: ``amax / 6.0`` is ``f32(amax * f32(1/6))``. The
# FP8 step is its torch fallback (``fp8_eager``), as for per-tensor FP8.

#: ``f32(1/6)``, the reciprocal torch's CUDA division by ``6.0`` multiplies with.
INV6 = float(torch.tensor(1.0) / torch.tensor(6.0))


def _f32(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).to(torch.float64)


def _e4m3(v: torch.Tensor) -> torch.Tensor:
    """Round-to-nearest-even onto E4M3FN (3 mantissa bits, exponents >= -6), |v| <= 448."""
    mag = v.abs()
    exponent = torch.floor(torch.log2(torch.where(mag > 0, mag, torch.ones_like(mag))))
    step = torch.exp2(torch.clamp(exponent, min=-6) - 3)
    return torch.sign(v) * torch.round(mag / step) * step


def _modelopt_static_nvfp4(x, block_amax, global_amax, m8: float) -> torch.Tensor:
    a = _f32(block_amax.double()).reshape(-1, 1)
    s = _f32(a * INV6)  # scale = amax / 6.0 on CUDA
    big_g = _f32(_f32(_f32(global_amax.double()) * (448.0 / m8)) * INV6)
    safe = torch.where(big_g <= 2.0**-24, torch.ones_like(big_g), big_g)
    scale = _f32(_f32(1.0 / safe) * 448.0)  # 448.0 / t is reciprocal(t) * 448 in torch
    inv = _f32(1.0 / scale)
    sq = _f32(_e4m3(torch.clamp(_f32(s * scale), -448.0, 448.0)) * inv)
    xf = _f32(x.double()).reshape(a.numel(), -1)
    zero = sq == 0
    safe_sq = torch.where(zero | ~torch.isfinite(sq), torch.ones_like(sq), sq)
    r = _f32(xf.abs() / safe_sq)
    grid = [(0.25, True, 0.0), (0.75, False, 0.5), (1.25, True, 1.0), (1.75, False, 1.5)]
    grid += [(2.5, True, 2.0), (3.5, False, 3.0), (5.0, True, 4.0)]
    q = torch.full_like(r, 6.0)
    for bound, inclusive, value in reversed(grid):
        q = torch.where(r <= bound if inclusive else r < bound, value, q)
    y = _f32(q * safe_sq)
    y = torch.where(xf >= 0, y, -y)
    y = torch.where(zero, torch.zeros_like(y), y)
    return y.reshape(x.shape).to(x.dtype)


@settings(max_examples=60, deadline=None)
@given(
    blocks=st.integers(1, 6),
    block=st.sampled_from([8, 16]),
    four_over_six=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    spread=st.sampled_from([1e-3, 1.0, 300.0]),
    enlarge=st.sampled_from([1.0, 1.5, 0.5]),
    shared=st.sampled_from([1.0, 1.75, 40.0]),
    seed=st.integers(0, 2**16),
)
def test_static_nvfp4_numerics_follow_modelopt_formula(
    blocks, block, four_over_six, dtype, spread, enlarge, shared, seed
):
    """Block amaxes as max or MSE calibration leaves them (x1, x1.5, x0.5) under a global amax
    of their maximum or a larger sibling-shared one; some blocks all zero."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(blocks, block, generator=g) * spread).to(dtype)
    x[torch.rand(blocks, generator=g) < 0.2] = 0
    block_amax = x.float().abs().amax(-1, keepdim=True) * enlarge
    global_amax = block_amax.max() * shared
    got = fake_quant_nvfp4_static(x, block_amax, global_amax, four_over_six=four_over_six)
    expected = _modelopt_static_nvfp4(x, block_amax, global_amax, 256.0 if four_over_six else 448.0)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


@SETTINGS
@given(
    rows=st.integers(1, 4),
    blocks=st.integers(1, 3),
    four_over_six=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_static_nvfp4_weights_after_max_follow_modelopt(
    reference_fake_quant, rows, blocks, four_over_six, dtype, seed
):
    """End to end: ``NVFP4_FOUR_OVER_SIX_CFG`` (and without four-over-six) under max
    calibration; the calibrated buffers equal Model Optimizer's, and qruntime's quantized weight
    is Model Optimizer's formula applied to Model Optimizer's buffers."""
    torch.manual_seed(seed)
    linear = nn.Linear(16 * blocks, 8 * rows).to(dtype)
    cfg = _config("NVFP4_FOUR_OVER_SIX_CFG")
    if not four_over_six:
        del cfg["quant_cfg"][1]["cfg"]["block_sizes"]["four_over_six"]
    data = [torch.randn(3, 16 * blocks).to(dtype)]
    ref = _modelopt(linear, cfg, lambda m: m(data[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(linear), copy.deepcopy(cfg), lambda m: m(data[0]))
    oracle.assert_same_model(ref, ours)
    buffers = oracle.quantizer_buffers(ref)
    m8 = 256.0 if four_over_six else 448.0
    expected = _modelopt_static_nvfp4(
        linear.weight.detach(),
        buffers["weight_quantizer._amax"],
        buffers["weight_quantizer._global_amax"],
        m8,
    )
    with torch.no_grad():
        got = ours.weight_quantizer(ours.weight)
    assert got.dtype == expected.dtype
    assert torch.equal(got, expected)


def test_sequential_rnn_input_quantizer_is_used_unlike_modelopt():
    """A list config on an RNN input quantizer (kept difference). Model Optimizer's forward
    reads the input quantizers it created at conversion (a list kept beside the module), so the
    ``SequentialQuantizer`` that the config puts in their place is never called and stays
    uncalibrated, while the orphaned quantizer quantizes dynamically; qruntime calls and
    calibrates the quantizer the config installed. Everything else agrees."""
    torch.manual_seed(0)
    model = nn.LSTM(8, 8)
    cfg = _config("INT8_DEFAULT_CFG")
    sequential = [
        {"num_bits": 4, "block_sizes": {-1: 4, "type": "static"}, "enable": True},
        {"num_bits": 8, "axis": None, "enable": True},
    ]
    cfg["quant_cfg"].append({"quantizer_name": "*input_quantizer", "cfg": sequential})
    data = [torch.randn(5, 2, 8) for _ in range(2)]

    def forward_loop(m):
        for x in data:
            m(x)

    ref = _modelopt(model, cfg, forward_loop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
    theirs, mine = oracle.quantizer_buffers(ref), oracle.quantizer_buffers(ours)
    sq = "layer_0_input_quantizer."
    assert not [k for k in theirs if k.startswith(sq)]
    assert sorted(k for k in mine if k.startswith(sq)) == [f"{sq}0._amax", f"{sq}1._amax"]
    assert all(bool((mine[k] > 0).all()) for k in mine if k.startswith(sq))
    assert {k: v for k, v in mine.items() if not k.startswith(sq)}.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(mine[key], value), key


def _used_input_quantizers(module: nn.RNNBase, prefix: str) -> list[str]:
    """The ``prefix`` (``layer``/``proj``) input quantizers the forward calls: the first
    ``num_layers * directions`` of the ones created, in creation order."""
    directions = 2 if module.bidirectional else 1
    created = [
        f"{prefix}_{k}{'_reverse' if d else ''}_input_quantizer"
        for k in range(module.num_layers * directions)
        for d in range(directions)
    ]
    return created[: module.num_layers * directions]


@pytest.mark.parametrize(
    ("cls", "kwargs", "pattern", "downstream"),
    [
        (nn.LSTM, {"num_layers": 3}, "*input_quantizer", []),
        (nn.LSTM, {"num_layers": 3}, "*layer_[12]_input_quantizer", []),
        (nn.LSTM, {"num_layers": 2, "proj_size": 4}, "*input_quantizer", []),
        (
            nn.LSTM,
            {"num_layers": 2, "proj_size": 4, "bidirectional": True},
            "*proj_*",
            ["layer_1_input_quantizer._amax", "layer_1_reverse_input_quantizer._amax"],
        ),
        (nn.GRU, {"num_layers": 2, "bidirectional": True}, "*input_quantizer", []),
    ],
    ids=["lstm3", "lstm3-layers-1-2", "lstm-proj", "lstm-proj-bi-proj-only", "gru-bi"],
)
def test_sequential_rnn_input_quantizers_of_every_layer_unlike_modelopt(
    cls, kwargs, pattern, downstream
):
    """The kept difference above on stacked, projected and bidirectional RNNs (issue 15's
    "input quantizers of layers >= 1 left uncalibrated" and "an LSTM with proj_size whose
    sequential quantizer gets a different calibration"): every sequential quantizer the config
    installs on a quantizer the forward uses is calibrated by qruntime (both stages) and left
    without amax by Model Optimizer; the unused ones stay uncalibrated in both. Model
    Optimizer's orphaned quantizers are outside its calibration, so they quantize the
    calibration data: the layers after a sequential projection (``downstream``) see other
    inputs there and get other amaxes. Everything else is equal bit for bit."""
    torch.manual_seed(0)
    model = cls(8, 8, **kwargs)
    cfg = _config("INT8_DEFAULT_CFG")
    sequential = [{"num_bits": 4, "axis": None}, {"num_bits": 8, "axis": None}]
    cfg["quant_cfg"].append({"quantizer_name": pattern, "cfg": sequential})
    data = [torch.randn(5, 2, 8) for _ in range(2)]

    def forward_loop(m):
        for x in data:
            m(x)

    ref = _modelopt(model, cfg, forward_loop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
    sequential_names = {
        name for name, child in ours.named_children() if isinstance(child, SequentialQuantizer)
    }
    assert sequential_names  # the pattern installed some
    used = _used_input_quantizers(model, "layer") + (
        _used_input_quantizers(model, "proj") if model.proj_size else []
    )
    theirs, mine = oracle.quantizer_buffers(ref), oracle.quantizer_buffers(ours)
    for name in sequential_names:
        stages = sorted(k for k in mine if k.startswith(f"{name}."))
        assert not [k for k in theirs if k.startswith(f"{name}.")], name
        if name in used:
            assert stages == [f"{name}.0._amax", f"{name}.1._amax"], name
            assert all(bool((mine[k] > 0).all()) for k in stages), name
        else:
            assert stages == [], name
    rest = {k: v for k, v in mine.items() if k.split(".")[0] not in sequential_names}
    assert rest.keys() == theirs.keys()
    for key, value in theirs.items():
        if key in downstream:
            assert not torch.equal(rest[key], value), key
            torch.testing.assert_close(rest[key], value, rtol=0.05, atol=0)
        else:
            assert torch.equal(rest[key], value), key


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
def test_rnn_cell_quantizes_input_before_hidden_state(cls):
    """A static running-mean bias rounds differently with the batch order: the input quantizer
    of each layer must see the step's input before its hidden state, as in Model Optimizer
    (the hidden state first gave amaxes a few ulps off)."""
    torch.manual_seed(1)
    model = cls(8, 8, num_layers=2)
    cfg = _config("INT8_DEFAULT_CFG")
    bias = {-1: None, "type": "static", "method": "mean"}
    cfg["quant_cfg"].append(
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "bias": bias}}
    )
    data = [torch.randn(6, 3, 8) * 3 for _ in range(2)]
    _compare(model, cfg, data, torch.randn(6, 3, 8) * 4)


@pytest.mark.parametrize(("four_over_six", "global_amax"), [(True, 2.84375), (False, 3.265625)])
def test_static_nvfp4_block_scales_divide_by_six_as_on_cuda(four_over_six, global_amax):
    """A bf16 weight whose global amax gives another ``G = global * 448/M8 / 6`` under a
    correctly rounded division than under CUDA's reciprocal multiplication: the block scales
    and outputs are Model Optimizer's (CUDA) ones. Before, qruntime divided exactly and every
    block scale of such a weight was one ulp off, and so was every non-zero output."""
    g64 = torch.tensor(global_amax, dtype=torch.float64)
    m8 = 256.0 if four_over_six else 448.0
    cuda_g = _f32(_f32(g64 * (448.0 / m8)) * INV6)
    assert cuda_g != _f32(_f32(g64 * (448.0 / m8)) / 6.0)  # the case separates the readings
    block_amax = (torch.tensor([[1.0], [0.8], [0.3], [0.55], [0.0]]) * global_amax).bfloat16()
    block_amax = block_amax.float()
    x = torch.linspace(-1.0, 1.0, 5 * 16).reshape(5, 16) * block_amax
    x = x.bfloat16()
    g = torch.tensor(global_amax)
    got = fake_quant_nvfp4_static(x, block_amax, g, four_over_six=four_over_six)
    assert torch.equal(got, _modelopt_static_nvfp4(x, block_amax, g, m8))
    scales = nvfp4_static_block_scales(block_amax, g, four_over_six=four_over_six)
    g_scale = _f32(_f32(1.0 / cuda_g) * 448.0)
    s = _f32(block_amax.double() * INV6)
    want = _f32(_e4m3(_f32(s * g_scale)) * _f32(1.0 / g_scale))
    assert torch.equal(scales.double(), want)


@pytest.mark.parametrize("cls", [nn.GRU, nn.LSTM])
def test_packed_rnn_per_row_calibration_is_refused(cls):
    """Kept difference. An input quantizer whose static bias is per row (``{-1: None}`` keeps
    the batch dim) is calibrated on 3 rows; a packed sequence whose last step has 1 row is
    broadcast to 3 rows by ``x - bias``. Model Optimizer's cell then runs on invented rows and
    its packed layer stops on a bare ``AssertionError``; qruntime refuses the step with a
    ``RuntimeError`` that says what happened, and keeps working on batches that fit."""
    torch.manual_seed(0)
    model = cls(4, 4)
    cfg = _config("INT8_DEFAULT_CFG", "bias")
    calib = _sequences(4, 2, False, True, torch.float32, 0.5, 0)
    unseen = _sequences(4, 2, False, True, torch.float32, 1.0, 99)  # batch sizes [3, 1]
    ref = _modelopt(model, cfg, lambda m: m(calib))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), lambda m: m(calib))
    oracle.assert_same_model(ref, ours)
    assert tuple(ours.layer_0_input_quantizer.state_dict()["_bias_value"].shape) == (3, 1)
    with torch.no_grad():
        with _vf_restored(), pytest.raises(AssertionError):
            ref(unseen)
        with pytest.raises(RuntimeError, match=r"of shape \(1, 4\) into \(3, 4\)"):
            ours(unseen)
        full = torch.randn(2, 3, 4)  # every step has the 3 calibrated rows
        with _vf_restored():
            expected = _first(ref(full))
        assert torch.equal(_first(ours(full)), expected)

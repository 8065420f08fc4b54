"""Bit-exact checks of qruntime.numerics against every case of tests/data/fq_vectors.pt (Model Optimizer 0.47.0 outputs).

Each of the 121 cases is one test. Cases with a stored output must match it bit for bit (NaN
positions must agree; every other element, sign of zero included, must have the same bit
pattern), and so must stored gradients and real-quant scales/codes. The 17 cases that have no
output because Model Optimizer fails on CPU (docs/numerics.md, 'Test vectors') check what we do
instead: the GPU formats run here and must be consistent with the emulated GPU vectors; config
errors must raise.

Sources: ``modelopt-0.47.0-cpu`` (Model Optimizer on CPU), ``mx-host-emulation`` (the CUDA
extension's element functions compiled for the host) and ``triton-interpreter`` (Model
Optimizer's Triton code in the interpreter). ``fake_quant`` follows the CUDA extension where the
two GPU NVFP4 kernels disagree (docs/numerics.md, 'Choices', item 1); the Triton-formula vectors
are checked against ``fake_quant_nvfp4_dynamic(..., kernel="triton")``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from qruntime.numerics import amax_reduce, fake_quant, reduce_amax
from qruntime.numerics import mx as mx_mod
from qruntime.numerics import nvfp4 as nvfp4_mod
from qruntime.numerics import real_quant as rq
from qruntime.numerics.floats import TABLE_FORMATS
from qruntime.numerics.rotation import normalized_hadamard_transform

VECTORS = Path(__file__).resolve().parents[1] / "data" / "fq_vectors.pt"


def _load() -> dict[str, Any]:
    return torch.load(VECTORS, weights_only=True)


_DATA = _load()
CASES = sorted(k for k in _DATA if not k.startswith("_"))
WITH_OUTPUT = [k for k in CASES if _DATA[k].get("output") is not None]
CPU_FAILURES = [k for k in CASES if _DATA[k].get("output") is None]

_INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def assert_bits(actual: torch.Tensor, expected: torch.Tensor, what: str = "output") -> None:
    """Same shape, dtype, NaN positions and bit pattern of every non-NaN element."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if actual.dtype.is_floating_point:
        nan_a, nan_e = torch.isnan(actual.float()), torch.isnan(expected.float())
        assert torch.equal(nan_a, nan_e), f"{what}: NaN positions differ"
        a = actual[~nan_a].contiguous().view(_INT_VIEW[actual.element_size()])
        e = expected[~nan_e].contiguous().view(_INT_VIEW[expected.element_size()])
    else:
        a, e = actual, expected
    bad = a != e
    assert not bool(bad.any()), (
        f"{what}: {int(bad.sum())} of {a.numel()} elements differ, e.g. "
        f"{actual[~torch.isnan(actual.float())][bad][:4].tolist() if actual.dtype.is_floating_point else a[bad][:4].tolist()}"
        f" vs {expected[~torch.isnan(expected.float())][bad][:4].tolist() if expected.dtype.is_floating_point else e[bad][:4].tolist()}"
    )


def test_vector_file_is_complete() -> None:
    """The suite covers the 104 stored outputs and the 17 recorded CPU failures."""
    assert len(WITH_OUTPUT) == 104
    assert len(CPU_FAILURES) == 17
    assert set(CPU_FAILURES) == set(_DATA["_cpu_failures"])
    assert _DATA["_meta"]["modelopt"] == "0.47.0"


# ------------------------------------------------------------------------------- stored outputs
def _run_real_quant(case: dict[str, Any]) -> torch.Tensor:
    """Real-quant round trips: check the packed form and scales, return the dequantized tensor."""
    x, ex, entry = case["input"], case["extra"], case["entry"]
    if entry.startswith("NVFP4QTensor"):
        bs = case["cfg"]["block_size"]
        p = rq.nvfp4_quantize(x, bs)
        assert_bits(p.scale, ex["per_block_scale_e4m3"], "per-block e4m3 scale")
        assert p.double_scale is not None
        assert_bits(p.double_scale, ex["global_scale"], "global scale")
        assert_bits(p.data, ex["packed"], "packed codes")
        return rq.nvfp4_dequantize(p, bs)
    if entry.startswith("MXFP4QTensor"):
        bs = case["cfg"]["block_size"]
        p = rq.mxfp4_quantize(x, bs)
        assert_bits(p.scale, ex["e8m0"], "e8m0 scale")
        assert_bits(p.data, ex["packed"], "packed codes")
        return rq.mxfp4_dequantize(p, bs)
    if entry.startswith("MXFP8QTensor"):
        bs = case["cfg"]["block_size"]
        p = rq.mxfp8_quantize(x, bs)
        assert_bits(p.scale, ex["e8m0"], "e8m0 scale")
        assert_bits(p.data, ex["data_e4m3"], "e4m3 data")
        return rq.mxfp8_dequantize(p, bs)
    # TensorQuantizer(fake_quant=False): the packed form from the low-level functions ...
    cfg = case["cfg"]
    if cfg["num_bits"] == 4 and "scale_block_sizes" in cfg["block_sizes"]:
        bs = cfg["block_sizes"]
        p = rq.nf4_quantize(x, bs[-1], bs["scale_block_sizes"][-1], bs["scale_bits"])
        assert p.double_scale is not None and p.scale_zeros is not None
        assert_bits(p.scale, ex["_scale"], "_scale")
        assert_bits(p.double_scale, ex["_double_scale"], "_double_scale")
        assert_bits(p.scale_zeros, ex["_scale_zeros"], "_scale_zeros")
    elif cfg["num_bits"] == 4:
        assert_bits(rq.int4_quantize(x, cfg["block_sizes"][-1]).scale, ex["_scale"], "_scale")
    elif cfg["num_bits"] == 8:
        assert_bits(rq.int8_quantize(x, cfg.get("axis")).scale, ex["_scale"], "_scale")
    else:
        assert_bits(rq.fp8_quantize(x).scale, ex["_scale"], "_scale")
    # ... and the round trip through the public entry point.
    return fake_quant(x, cfg, case["amax"])


def _run_case(case: dict[str, Any]) -> torch.Tensor:
    x, cfg, ex = case["input"], case["cfg"], case.get("extra") or {}
    source, entry = case["source"], case["entry"]
    if entry.startswith("compute_scale"):
        scale, unscale = mx_mod.e8m0_scale(x, cfg["format"])
        assert_bits(scale, ex["scale"], "scale")
        assert_bits(unscale, ex["unscale"], "unscale")
        return unscale
    if "fp4_cast_ste" in entry:
        return nvfp4_mod.fp4_cast(x)
    if source == "triton-interpreter" and cfg["block_sizes"].get("type") == "dynamic":
        # Triton-kernel formula; fake_quant itself follows the CUDA extension.
        return nvfp4_mod.fake_quant_nvfp4_dynamic(x, case["amax"], kernel="triton")
    if entry == "SequentialQuantizer":
        return fake_quant(x, cfg["sequential"], [case["amax"], ex["amax_1"]])
    if "QTensor" in entry or cfg.get("fake_quant") is False:
        return _run_real_quant(case)
    kwargs = {
        "bias_value": ex.get("bias_value"),
        "pre_quant_scale": ex.get("pre_quant_scale"),
        "global_amax": ex.get("global_amax"),
    }
    if "block_scale" in ex:
        scales = nvfp4_mod.nvfp4_static_block_scales(
            case["amax"],
            ex["global_amax"],
            four_over_six=bool(cfg["block_sizes"].get("four_over_six")),
        )
        assert_bits(scales, ex["block_scale"], "static NVFP4 block scales")
    if "grad_output" in ex:
        xi = x.clone().requires_grad_(True)
        y = fake_quant(xi, cfg, case["amax"], **kwargs)
        y.backward(ex["grad_output"])
        assert xi.grad is not None
        assert_bits(xi.grad, ex["grad_input"], "grad_input")
        return y.detach()
    return fake_quant(x, cfg, case["amax"], **kwargs)


def _recorded_with_cpu_division(case: dict[str, Any]) -> bool:
    """Static NVFP4 vectors whose block scales were recorded by running Model Optimizer's
    ``compute_fp4_scales`` on CPU tensors, where torch divides ``amax / 6.0`` exactly. Model
    Optimizer itself runs that code only on CUDA tensors (its static kernel needs them), where
    torch multiplies by ``f32(1/6)``, and qruntime follows the CUDA reading on every device
    (docs/numerics.md, 'Static NVFP4 and four-over-six'; the CUDA reading is checked against a
    float64 re-derivation in tests/conformance/test_max_unseen_conformance.py)."""
    return case["source"] == "triton-interpreter" and "block_scale" in (case.get("extra") or {})


@pytest.mark.parametrize("name", WITH_OUTPUT)
def test_stored_output_bit_exact(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = _DATA[name]
    if _recorded_with_cpu_division(case):
        # with the recording's division, everything else must reproduce it bit for bit
        monkeypatch.setattr(nvfp4_mod, "divide_as_cuda", lambda x, divisor: x / divisor)
    assert_bits(_run_case(case), case["output"])


def test_cpu_recorded_static_vectors_differ_only_by_the_division() -> None:
    """Without the patch above, those vectors' block scales differ (the recording is not what
    Model Optimizer computes on CUDA) — so the patch is needed, and the difference is the
    division alone."""
    cases = [_DATA[k] for k in WITH_OUTPUT if _recorded_with_cpu_division(_DATA[k])]
    assert cases
    differs = False
    for case in cases:
        fos = bool(case["cfg"]["block_sizes"].get("four_over_six"))
        g = case["extra"]["global_amax"]
        ours = nvfp4_mod.nvfp4_static_block_scales(case["amax"], g, four_over_six=fos)
        differs |= not torch.equal(ours, case["extra"]["block_scale"])
    assert differs


# ------------------------------------------------------------------ cases Model Optimizer fails
def _grid_check(y: torch.Tensor, unit: torch.Tensor, table: str) -> None:
    """Every ``|y|`` of a row is ``v * unit`` (fp32 product) for a value ``v`` of the table."""
    values = torch.tensor(TABLE_FORMATS[table].values)
    candidates = (values * unit.reshape(-1, 1)).unsqueeze(1)
    hit = y.float().abs().reshape(unit.numel(), -1, 1) == candidates
    assert bool(hit.any(dim=-1).all())


def _same_as_fp32_path(x: torch.Tensor, cfg: dict[str, Any], amax: Any = None) -> torch.Tensor:
    """bf16 inputs are quantized in fp32 and RNE-cast once: equal to the fp32 path, cast.

    Returns the fp32-path output, whose values lie exactly on the scaled element grid.
    """
    y = fake_quant(x, cfg, amax)
    assert y.dtype == x.dtype and y.shape == x.shape
    y32 = fake_quant(x.float(), cfg, None if amax is None else amax.float())
    assert_bits(y, y32.to(x.dtype))
    return y32


def _nvfp4_dynamic(case: dict[str, Any]) -> None:
    x, cfg = case["input"], case["cfg"]
    _same_as_fp32_path(x, cfg)
    bs = cfg["block_sizes"][-1]
    assert_bits(fake_quant(x, cfg), nvfp4_mod.fake_quant_nvfp4_dynamic(x, amax_reduce(x), bs))
    # Calibrated (static) global amax: the same kernel with the stored value.
    g = amax_reduce(x).float() * 2
    assert_bits(fake_quant(x, cfg, g), nvfp4_mod.fake_quant_nvfp4_dynamic(x, g, bs))


def _nvfp4_static(case: dict[str, Any]) -> None:
    # Un-calibrated static NVFP4 runs with the per-block amax of the input (Model Optimizer
    # needs a promoted, calibrated quantizer and triton): same as passing reduce_amax's result.
    x, cfg = case["input"], case["cfg"]
    block_amax = reduce_amax(x, cfg)
    assert block_amax is not None and block_amax.shape == (x.numel() // 16, 1)
    assert_bits(fake_quant(x, cfg), fake_quant(x, cfg, block_amax))
    y = _same_as_fp32_path(x, cfg, block_amax)
    fos = bool(cfg["block_sizes"].get("four_over_six"))
    sq = nvfp4_mod.nvfp4_static_block_scales(block_amax, four_over_six=fos)
    _grid_check(y.reshape(-1, 16), sq.reshape(-1, 1), "E2M1")


def _mx(case: dict[str, Any]) -> None:
    x, cfg = case["input"], case["cfg"]
    y = _same_as_fp32_path(x, cfg)
    bits = cfg["num_bits"]
    el = mx_mod.MX_ELEMENTS[bits]
    blocks = x.float().reshape(-1, 32)
    _, unscale = mx_mod.e8m0_scale(blocks.abs().amax(dim=1, keepdim=True), el)
    if el.name in TABLE_FORMATS:
        _grid_check(y.reshape(-1, 32), unscale, el.name)
    elif el.name == "INT8":
        r = y.float().reshape(-1, 32) / unscale
        assert torch.equal(r, r.round()) and bool((r.abs() <= 127).all())
    else:
        fp8 = torch.float8_e4m3fn if el.name == "E4M3" else torch.float8_e5m2
        r = y.float().reshape(-1, 32) / unscale
        assert torch.equal(r, r.to(fp8).float())


def _rotate(case: dict[str, Any]) -> None:
    x, cfg = case["input"], case["cfg"]
    rotated = normalized_hadamard_transform(x)
    n = x.shape[-1]
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    exact = x.double() @ h / math.sqrt(n)
    torch.testing.assert_close(rotated.double(), exact, rtol=0, atol=2e-2 * float(x.abs().max()))
    assert_bits(fake_quant(x, cfg), fake_quant(rotated, {"num_bits": 8}))
    # rotate_back: the self-inverse transform again after quantization.
    back = fake_quant(x, {**cfg, "rotate": {"enable": True, "mode": "rotate_back"}})
    assert_bits(back, normalized_hadamard_transform(fake_quant(rotated, {"num_bits": 8})))


def _fp4_cast(case: dict[str, Any]) -> None:
    x = case["input"]
    y = nvfp4_mod.fp4_cast(x)
    assert_bits(y, nvfp4_mod.fp4_cast(x.float()).to(x.dtype))
    _grid_check(y, torch.tensor(1.0), "E2M1")


_RAISES = {
    "fp8_e5m2_per_tensor": NotImplementedError,  # config error in Model Optimizer
    "int4_dynamic_block_no_scale_bits": ValueError,  # bare AssertionError there
    "int4_dynamic_block_e8m0": NotImplementedError,  # same exception type there
}

_CHECKS = {
    "nvfp4_dynamic": _nvfp4_dynamic,
    "nvfp4_dynamic_static_amax": _nvfp4_dynamic,
    "nvfp4_bs32_dynamic": _nvfp4_dynamic,
    "nvfp4_static_plain_tensorquantizer": _nvfp4_static,
    "nvfp4_static_promoted": _nvfp4_static,
    "nvfp4_static_promoted_four_over_six": _nvfp4_static,
    "mxfp4": _mx,
    "mxfp6_e3m2": _mx,
    "mxfp6_e2m3": _mx,
    "mxfp8_e4m3": _mx,
    "mxfp8_e5m2": _mx,
    "mxint8": _mx,
    "int8_rotate_hadamard": _rotate,
    "fp4_cast_ste_lsq": _fp4_cast,
}


def test_every_cpu_failure_has_a_check() -> None:
    assert set(_RAISES) | set(_CHECKS) == set(CPU_FAILURES)


@pytest.mark.parametrize("name", CPU_FAILURES)
def test_cpu_failure_case(name: str) -> None:
    case = _DATA[name]
    if name in _RAISES:
        with pytest.raises(_RAISES[name]):
            fake_quant(case["input"], case["cfg"], case["amax"])
        return
    _CHECKS[name](case)


def test_fake_quant_follows_the_cuda_extension_not_triton() -> None:
    """docs/differences.md #14: one NVFP4 semantics on every device. On the same input the two
    GPU kernels disagree (Triton's 1e-5 scale rule zeroes this tiny block); fake_quant gives the
    CUDA-extension bits."""
    triton = _DATA["nvfp4_dynamic_triton_small[triton-interp]"]
    cuda = _DATA["nvfp4_dynamic_cudaext_small[mx-host]"]
    assert torch.equal(triton["input"], cuda["input"])
    y = fake_quant(cuda["input"], cuda["cfg"], cuda["amax"])
    assert_bits(y, cuda["output"])
    assert not torch.equal(y, triton["output"])

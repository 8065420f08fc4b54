"""Triton kernels vs the torch reference, bit for bit, in Triton's CPU interpreter.

What this proves on a machine without a GPU (docs/kernels.md has the full list):

* every format kernel's arithmetic — loads, in-kernel amax, scales, rounding, the narrowing to
  the output dtype — gives the reference's bits (sign of zero included; NaN positions equal)
  for fp32/bf16/fp16, ties, subnormals, zeros, NaN/inf, odd shapes, partial blocks and
  non-contiguous inputs. The kernels never rely on a Triton float cast that rounds, so the
  interpreter's conversion quirks (docs/numerics.md, 'Test vectors') are not in the tested path
  at all;
* the backward is the reference's STE, including the in-kernel amax it clips with;
* dispatch: which backend runs for CPU/CUDA tensors with and without Triton (devices faked).

What it cannot prove: GPU code generation (PTX rounding modes, FTZ, Triton lowering); those
checks live in tests/gpu and run through bench/gpu_check.sh on a GPU machine.

Every kernel test asserts that the kernel really ran (``KERNEL_STATS``), so a silent fallback
to the reference cannot make it pass.
"""

from __future__ import annotations

import os

# The kernels are imported lazily, so setting this here (before the first kernel import) makes
# them run in the interpreter even when pytest is started without it (`make test` sets it too).
os.environ.setdefault("TRITON_INTERPRET", "1")

import ast
import math
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch
import triton  # noqa: F401  (a missing Triton must fail this module, not skip it)
from kernel_cases import (
    CASES,
    DTYPES,
    EDGE_IDS,
    NAN,
    amax_for,
    assert_bits,
    dyn,
    edge_cases,
    make_input,
    run_both,
)
from qconfig.attributes import QuantizerAttributeConfig as QAC
from qruntime import TensorQuantizer
from qruntime.kernels import KERNEL_STATS, dispatch, kernel_for, kernels, registry
from qruntime.kernels.layout import (
    BOTH,
    COLS,
    ROWS,
    SCALAR,
    EwPlan,
    collapse,
    ew_plan,
    row_plan,
    tile_plan,
)
from qruntime.numerics import fake_quant, formats

pytestmark = [
    # numpy inside the interpreter warns on the IEEE divisions by zero the formats rely on.
    pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning"),
]


@pytest.mark.parametrize(
    ("cfg", "shape", "modes", "ties"),
    [pytest.param(c, s, m, t, id=i) for i, c, s, m, t in CASES],
)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16", "fp16"])
def test_kernel_matches_reference(cfg, shape, modes, ties, dtype):
    """Each amax mode once per dtype; NaN/inf inputs and the non-contiguous layout alternate
    over modes and dtypes so that every case sees both (the interpreter is slow)."""
    d = DTYPES.index(dtype)
    seed = zlib.crc32(repr((cfg, shape)).encode()) % 1000
    for k, mode in enumerate(modes):
        x = make_input(
            shape,
            dtype,
            seed + 7 * k + d,
            ties=ties,
            specials=(k + d) % 2 == 0,
            transposed=(k + d + seed) % 2 == 1,
        )
        if cfg.get("unsigned"):
            x = torch.where(x < 0, -x, x)  # unsigned quantizers reject negative inputs
        amax = amax_for(mode, x, cfg)
        got, want = run_both(x, cfg, amax)
        assert_bits(got, want)


@pytest.mark.parametrize("case", EDGE_IDS)
def test_edge_cases(case):
    """Edge amaxes, NVFP4 global-amax edges and MX edge blocks (kernel_cases.edge_cases)."""
    x, cfg, amax, keep = edge_cases("cpu")[case]
    got, want = run_both(x, cfg, amax)
    if keep is not None:
        got, want = got[keep], want[keep]
    assert_bits(got, want)


GRAD_CASES = [
    ({"num_bits": 8, "axis": 0, "pass_through_bwd": False}, None),
    ({"num_bits": 4, "block_sizes": {-1: 8}, "pass_through_bwd": False}, None),
    ({"num_bits": (4, 3), "pass_through_bwd": False}, "static"),
    ({"num_bits": (4, 3), "block_sizes": {-1: 16, -2: 4}, "pass_through_bwd": False}, None),
    (
        {
            "num_bits": 8,
            "axis": 0,
            "pass_through_bwd": False,
            "bias": {1: None, "type": "dynamic", "method": "mean"},
        },
        None,
    ),
    (
        {
            "num_bits": (2, 1),
            "block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3)},
            "pass_through_bwd": False,
        },
        "static",
    ),
    ({**dyn((2, 1), 16, (4, 3)), "pass_through_bwd": False}, None),
    (dyn((2, 1), 32, (8, 0)), None),
    ({"num_bits": 8}, None),
]


@pytest.mark.parametrize(("cfg", "mode"), GRAD_CASES, ids=lambda v: str(v)[:40])
def test_backward_is_the_reference_ste(cfg, mode):
    """Gradients through the kernel path equal the reference's STE, NaN inputs included."""
    base = make_input((8, 32), torch.float32, 11, specials=False)
    base[0, 0] = NAN
    amax = amax_for(mode or "dynamic", base, cfg)
    grads = []
    outs = []
    for backend in ("triton", "torch"):
        x = base.clone().requires_grad_(True)
        y = fake_quant(x, cfg, amax, backend=backend)
        (y.nan_to_num(0.0) * torch.arange(y.numel()).reshape(y.shape)).sum().backward()
        grads.append(x.grad)
        outs.append(y.detach())
    assert_bits(outs[0], outs[1])
    assert_bits(grads[0], grads[1])


def test_static_bias_and_pre_quant_scale_go_through_the_kernel():
    x = make_input((4, 16), torch.bfloat16, 2, specials=False)
    cfg = {"num_bits": 8, "axis": 0, "bias": {1: None, "type": "static"}}
    bias = x.float().mean(1, keepdim=True).to(x.dtype)
    got, want = run_both(x, cfg, None, bias_value=bias, pre_quant_scale=torch.full((16,), 0.5))
    assert got.dtype == torch.float32  # bf16 * fp32 pre_quant_scale promotes
    assert_bits(got, want)


def test_sequential_quantizer_uses_kernels_for_each_step():
    x = make_input((4, 128), torch.float16, 4, specials=False)
    cfgs = [{"num_bits": 4, "block_sizes": {-1: 128}}, {"num_bits": (4, 3)}]
    before = KERNEL_STATS.copy()
    got = fake_quant(x, cfgs, backend="triton")
    ran = KERNEL_STATS - before
    assert ran[("int", "triton")] == 1 and ran[("fp8_e4m3", "triton")] == 1
    assert_bits(got, fake_quant(x, cfgs, backend="torch"))


def test_tensor_quantizer_uses_its_backend():
    x = make_input((6, 20), torch.bfloat16, 6, specials=False)
    fast = TensorQuantizer(QAC(num_bits=(4, 3), axis=0))
    ref = TensorQuantizer(QAC(num_bits=(4, 3), axis=0))
    assert fast.backend == "auto"  # the default: kernels for CUDA tensors
    fast.backend, ref.backend = "triton", "torch"
    before = KERNEL_STATS.copy()
    assert_bits(fast(x), ref(x))
    assert (KERNEL_STATS - before)[("fp8_e4m3", "triton")] == 1


def test_unsupported_inputs_fall_back_to_the_reference():
    """fp64, a 32-bit INT, an amax with three kept runs: no kernel covers them -> torch."""
    cases = [
        (torch.randn(4, 8, dtype=torch.float64), {"num_bits": 8}, None),
        (torch.randn(4, 8), {"num_bits": 24}, None),
        (torch.randn(2, 3, 2, 3, 2), {"num_bits": 8, "axis": (0, 2, 4)}, torch.rand(2, 1, 2, 1, 2)),
        (torch.randn(2, 3, 4, 5), {"num_bits": 8, "axis": (0, 2)}, None),
    ]
    for x, cfg, amax in cases[:3]:
        before = KERNEL_STATS.copy()
        got = fake_quant(x, cfg, amax, backend="triton")
        assert (KERNEL_STATS - before)[("int", "fallback")] == 1
        assert_bits(got, fake_quant(x, cfg, amax, backend="torch"))
    # (2,3,4,5) with axis=(0,2) dynamic: K R K R -> one pass per tile (r1=3, r2=5)
    x, cfg, _ = cases[3]
    got, want = run_both(x, cfg)
    assert_bits(got, want)


def test_reference_errors_are_kept():
    with pytest.raises(ValueError, match="Negative values in amax"):
        fake_quant(torch.randn(4, 4), {"num_bits": 8}, torch.tensor(-1.0), backend="triton")
    with pytest.raises(TypeError, match="unsigned"):
        fake_quant(torch.randn(4, 4), {"num_bits": 8, "unsigned": True}, backend="triton")
    with pytest.raises(ValueError, match="block size"):
        fake_quant(torch.randn(4, 24), dyn((2, 1), 24, (8, 0)), backend="triton")
    with pytest.raises(NotImplementedError):
        fake_quant(torch.randn(4, 4), {"num_bits": (5, 2)}, torch.tensor(1.0), backend="triton")


# ---- dispatch (devices and Triton availability faked) --------------------------------------


@pytest.fixture
def fresh_dispatch(monkeypatch: pytest.MonkeyPatch):
    dispatch.reset_warnings()
    yield monkeypatch
    dispatch.reset_warnings()


def _calls(before) -> dict:
    return dict(KERNEL_STATS - before)


def test_auto_uses_torch_for_cpu_tensors():
    x = torch.randn(4, 8)
    before = KERNEL_STATS.copy()
    assert_bits(fake_quant(x, {"num_bits": 8}, backend="auto"), fake_quant(x, {"num_bits": 8}))
    assert _calls(before) == {}
    assert dispatch.choose_backend(x, "auto") == "torch"


def test_auto_uses_triton_for_cuda_tensors(fresh_dispatch):
    fresh_dispatch.setattr(dispatch, "_is_cuda", lambda t: True)
    x = make_input((4, 32), torch.bfloat16, 8, specials=False)
    cfg = dyn((2, 1), 32, (8, 0))
    before = KERNEL_STATS.copy()
    got = fake_quant(x, cfg, backend="auto")
    assert _calls(before) == {("mx", "triton"): 1}
    assert_bits(got, fake_quant(x, cfg))
    before = KERNEL_STATS.copy()
    TensorQuantizer(QAC(**cfg))(x)  # the quantizer's default backend is "auto"
    assert _calls(before) == {("mx", "triton"): 1}


def test_cuda_without_triton_warns_once_and_uses_torch(fresh_dispatch):
    fresh_dispatch.setattr(dispatch, "_is_cuda", lambda t: True)
    fresh_dispatch.setattr(dispatch, "triton_available", lambda: False)
    x = torch.randn(4, 8)
    before = KERNEL_STATS.copy()
    with pytest.warns(RuntimeWarning, match="triton is not installed"):
        y = fake_quant(x, {"num_bits": 8}, backend="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fake_quant(x, {"num_bits": 8}, backend="auto")  # no second warning
    assert _calls(before) == {}
    assert_bits(y, fake_quant(x, {"num_bits": 8}))


def test_forced_triton_errors_clearly(fresh_dispatch):
    x = torch.randn(4, 8)
    fresh_dispatch.setattr(dispatch, "interpreter_enabled", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        fake_quant(x, {"num_bits": 8}, backend="triton")
    fresh_dispatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs the triton package"):
        fake_quant(x, {"num_bits": 8}, backend="triton")
    with pytest.raises(ValueError, match="unknown backend"):
        fake_quant(x, {"num_bits": 8}, backend="cuda")


def test_torch_backend_never_calls_a_kernel(fresh_dispatch):
    fresh_dispatch.setattr(dispatch, "_is_cuda", lambda t: True)
    before = KERNEL_STATS.copy()
    fake_quant(torch.randn(4, 8), {"num_bits": 8}, backend="torch")
    q = TensorQuantizer()
    q.backend = "torch"
    q(torch.randn(4, 8))
    assert _calls(before) == {}


def test_format_without_kernel_runs_torch(fresh_dispatch):
    kernel_for("mx")  # load the registry first
    fresh_dispatch.delitem(registry._REGISTRY, "mx")
    fresh_dispatch.setattr(dispatch, "_is_cuda", lambda t: True)
    x = torch.randn(3, 32)
    cfg = dyn((2, 1), 32, (8, 0))
    before = KERNEL_STATS.copy()
    assert_bits(fake_quant(x, cfg, backend="auto"), fake_quant(x, cfg))
    assert _calls(before) == {("mx", "fallback"): 1}


def test_kernel_declining_an_input_runs_torch(fresh_dispatch):
    def decline(*args: Any, **kwargs: Any):
        raise registry.KernelUnsupported("not this one")

    entry = kernel_for("int")
    fresh_dispatch.setitem(registry._REGISTRY, "int", registry.KernelEntry("int", decline, "t"))
    x = torch.randn(4, 8)
    before = KERNEL_STATS.copy()
    assert_bits(fake_quant(x, {"num_bits": 8}, backend="triton"), fake_quant(x, {"num_bits": 8}))
    assert _calls(before) == {("int", "fallback"): 1}
    assert entry is not None


def test_triton_errors_fall_back_under_auto_and_raise_under_triton(fresh_dispatch):
    from triton.compiler.errors import CompilationError

    def broken(*args: Any, **kwargs: Any):
        raise CompilationError("src", None, "does not compile here")

    kernel_for("int")
    fresh_dispatch.setitem(registry._REGISTRY, "int", registry.KernelEntry("int", broken, "t"))
    fresh_dispatch.setattr(dispatch, "_is_cuda", lambda t: True)
    x = torch.randn(4, 8)
    with pytest.warns(RuntimeWarning, match="failed"):
        y = fake_quant(x, {"num_bits": 8}, backend="auto")
    assert_bits(y, fake_quant(x, {"num_bits": 8}))
    with pytest.raises(CompilationError):
        fake_quant(x, {"num_bits": 8}, backend="triton")


def test_every_reference_format_has_a_kernel_and_no_orphans():
    assert set(kernels()) == set(formats())


def test_registering_a_second_kernel_for_a_format_is_refused():
    def other(*args: Any, **kwargs: Any):
        raise AssertionError

    kernel_for("int")
    other.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="already registered"):
        registry.register_kernel("int")(other)


KERNEL_PKG = Path(registry.__file__).parent
#: The modules that may import Triton at top level: the format kernels, and GPTQ's fused block
#: kernel (imported inside ``gptq_update.fused_nvfp4_update`` only when it runs).
TRITON_MODULES = {
    KERNEL_PKG / "_jit.py",
    KERNEL_PKG / "gptq_fused.py",
    *(KERNEL_PKG / "formats").glob("*.py"),
}


def test_only_kernel_modules_import_triton():
    """``import qruntime`` must work without Triton: no other module imports it at top level
    (the kernel modules are only imported by the registry on the first lookup)."""
    offenders = []
    for path in KERNEL_PKG.parent.rglob("*.py"):
        if path in TRITON_MODULES:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(n == "triton" or n.startswith("triton.") for n in names):
                offenders.append(str(path))
    assert offenders == []
    assert (KERNEL_PKG / "formats" / "scaled.py") in TRITON_MODULES  # the scan sees the kernels


def test_without_triton_auto_runs_torch(fresh_dispatch):
    fresh_dispatch.setitem(sys.modules, "triton", None)  # `import triton` now raises
    fresh_dispatch.setattr(dispatch, "_TRITON_OK", None)
    assert not dispatch.triton_available()
    x = torch.randn(4, 8)
    assert_bits(fake_quant(x, {"num_bits": 8}, backend="auto"), fake_quant(x, {"num_bits": 8}))


# ---- layout analysis (pure Python) ----------------------------------------------------------


def _ew_indices(shape: tuple[int, ...], pshape: tuple[int, ...]) -> torch.Tensor | None:
    plan = ew_plan(shape, pshape)
    if plan is None:
        return None
    r = torch.arange(plan.rows)[:, None]
    c = torch.arange(plan.cols)[None, :]
    return plan.index(r, c).reshape(-1)


@pytest.mark.parametrize("seed", range(40))
def test_ew_plan_indexes_like_torch_broadcasting(seed):
    g = torch.Generator().manual_seed(seed)
    ndim = int(torch.randint(1, 5, (1,), generator=g))
    shape = tuple(int(v) for v in torch.randint(1, 5, (ndim,), generator=g))
    keep = torch.rand(ndim, generator=g) < 0.5
    pshape = tuple(n if k else 1 for n, k in zip(shape, keep.tolist(), strict=True))
    expected = torch.arange(math.prod(pshape)).reshape(pshape).expand(shape).reshape(-1)
    got = _ew_indices(shape, pshape)
    groups = collapse(shape, pshape)
    assert groups is not None
    if sum(gr.kept for gr in groups) > 2:
        assert got is None
    else:
        assert got is not None and torch.equal(got, expected)


def test_layout_plans():
    assert collapse((4, 5), (3, 1)) is None  # does not broadcast
    assert row_plan((6, 4, 8), (6, 4, 1)).block == 8  # per token
    assert row_plan((6, 8), (1, 8)) is None  # per column: not one pass
    assert tile_plan((2, 128, 3, 128), (2, 1, 3, 1)) is not None
    assert ew_plan((2, 3), (2, 3)).pattern == COLS  # one parameter per element
    assert ew_plan((8, 5), (8, 1)).pattern == ROWS  # per channel on dim 0: one load per row
    assert ew_plan((4, 6, 5), (1, 6, 1)) == EwPlan(24, 5, ROWS, rmod=6, row_mod=True)
    assert ew_plan((2, 3, 4, 5), (2, 1, 4, 1)).pattern == BOTH
    assert ew_plan((3, 4), (1, 1)).pattern == SCALAR

"""Fuzz: qruntime reading what a user can hand it, state files and plans, mutated.

``restore_state`` of a mutated file, and ``apply_plan`` of a mutated plan, on a fresh model of
the zoo (``SubclassNet``: convolution, batch norm, linears, a subclass, an embedding) must
either succeed, with exactly the file's state (saving it again gives the same tensors and
plan), quantizers on and off as the plan says and finite outputs, or raise a documented error
(DocumentError, InputFileError, PlanMismatchError, UnsupportedAlgorithmError, and
QuantizerInputError from a calibration forward) and leave the model exactly as it was. This module is the only one of the suite that imports torch.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
from fuzz_structures import PLAN_KEYS, mutated_json, pick, plan_domain
from fuzz_support import check_document_error, memory_ceiling, run_fuzz, watchdog
from fuzz_text import to_json
from hypothesis import strategies as st

torch = pytest.importorskip("torch")
qruntime = pytest.importorskip("qruntime")
zoo = pytest.importorskip("zoo")

pytestmark = pytest.mark.fuzz

MODEL = "subclass"

#: The saved model: INT4 blocks then FP8 (sequential) on weights, FP8 inputs, max calibration.
CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": [
                {"num_bits": 4, "block_sizes": {-1: 8, "type": "static"}},
                {"num_bits": (4, 3)},
            ],
        },
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3)}},
        {"quantizer_name": "lm_head.weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    ],
    "algorithm": "max",
}


def allowed_errors() -> tuple[type[BaseException], ...]:
    from fuzz_support import qconfig_errors
    from qruntime.apply import PlanMismatchError
    from qruntime.calibrate.registry import UnsupportedAlgorithmError
    from qruntime.quantizer.tensor import QuantizerInputError

    return (*qconfig_errors(), PlanMismatchError, UnsupportedAlgorithmError, QuantizerInputError)


def _loop(model):
    with torch.no_grad():
        model(*zoo.example_inputs(MODEL))


_SAVED: dict[str, tuple[dict, dict]] = {}


@pytest.fixture(scope="module", autouse=True)
def _saved_state(tmp_path_factory):
    """Quantize and save the model once per module (under pytest's tmp dir)."""
    from safetensors import safe_open

    model = qruntime.quantize(zoo.build(MODEL), CONFIG, _loop)
    path = tmp_path_factory.mktemp("state") / "state.safetensors"
    qruntime.save_state(model, path)
    with safe_open(str(path), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
        _SAVED["state"] = tensors, dict(handle.metadata())


def saved_state() -> tuple[dict, dict]:
    """(tensors, metadata) of the saved quantized model."""
    return _SAVED["state"]


# -- what "unchanged" and "exactly the file" mean ---------------------------------------------


def fingerprint(model) -> tuple:
    """Module names and classes, and every parameter and buffer (bitwise)."""
    modules = tuple((n, type(m).__name__) for n, m in model.named_modules())
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return modules, tensors, "_qruntime_plan" in model.__dict__ or _has_plan(model)


def _has_plan(model) -> bool:
    from qruntime.apply import applied_plan

    return applied_plan(model) is not None


def same(a: tuple, b: tuple) -> bool:
    if a[0] != b[0] or a[2] != b[2] or a[1].keys() != b[1].keys():
        return False
    return all(_equal(a[1][k], b[1][k]) for k in a[1])


def _equal(x, y) -> bool:
    """Same dtype, shape and values (NaN equal to NaN: a test of "unchanged", not of NaN)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.is_floating_point():
        return bool(torch.isclose(x, y, rtol=0, atol=0, equal_nan=True).all())
    return torch.equal(x, y)


def hazard(plan) -> str | None:
    """Why the first forward of a model quantized by ``plan`` must not run in a test: a format
    whose arithmetic does not end (``2 ** (num_bits - 1)`` with a huge ``num_bits``)."""
    for name, q in plan.quantizers.items():
        elements = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        for attrs in elements:
            bits = attrs.num_bits
            values = bits if isinstance(bits, tuple) else (bits,)
            if any(isinstance(v, int) and abs(v) > 64 for v in values):
                return f"{name}: num_bits={bits!r} accepted (its first forward would not end)"
    return None


def check_forward(model) -> None:
    """The first forward after an accepted file or plan runs and gives finite outputs."""
    with torch.no_grad():
        out = model(*zoo.example_inputs(MODEL, seed=3))
    assert torch.isfinite(out).all(), "accepted, then the forward gives NaN/inf"


# -- state files --------------------------------------------------------------------------------

DTYPES = ["float16", "bfloat16", "float64", "int32", "int8", "uint8", "bool"]
TENSOR_OPS = ["shape", "dtype", "nan", "inf", "negative", "zero", "rename", "delete", "add"]
RENAMES = ["lm_head.weight_quantizer._bogus", "nope._amax", "lm_head.weight", "_amax", "x",
           "mlp.0.weight_quantizer.0._amax", "lm_head.input_quantizer._pre_quant_scale",
           "emb.input_quantizer._amax", "lm_head.weight_quantizer._amax.x"]  # fmt: skip


@st.composite
def state_edits(draw: st.DrawFn) -> tuple[list[tuple], tuple]:
    """Edits of the saved state, printed short on a failure: 0-2 tensor edits ``(op, key,
    argument)`` and one metadata edit ``(what, value)``."""
    keys = sorted(saved_state()[0])
    edits = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(TENSOR_OPS))
        key = keys[pick(draw, len(keys))]
        arg = None
        if op == "shape":
            arg = draw(st.sampled_from([(), (1,), (2, 2), (0,), "numel+1", (1, 1, 1)]))
        elif op == "dtype":
            arg = draw(st.sampled_from(DTYPES))
        elif op == "rename":
            arg = draw(st.sampled_from(RENAMES))
        elif op == "add":
            arg = (draw(st.sampled_from(["_amax", "_pre_quant_scale", "_bias", "_x"])),
                   draw(st.sampled_from([(), (3,), (32, 1)])))  # fmt: skip
        edits.append((op, key, arg))
    what = draw(st.sampled_from(["keep", "keep", "plan", "plan", "format", "no-plan", "junk"]))
    value: object = None
    if what == "plan":
        value = to_json(
            draw(mutated_json(json.loads(saved_state()[1]["plan"]), plan_domain, PLAN_KEYS))
        )
    elif what == "format":
        value = draw(st.sampled_from(["", "qruntime.state/v2", "qconfig.plan/v2"]))
    elif what == "junk":
        value = draw(st.sampled_from(["", "{", "null", "[]", "{}", '"x"', "1e999"]))
    return edits, (what, value)


def edited_state(edits: list[tuple], meta: tuple) -> tuple[dict, dict]:
    """The saved state with ``state_edits`` applied: (tensors, metadata)."""
    tensors, metadata = saved_state()
    tensors, metadata = dict(tensors), dict(metadata)
    for op, key, arg in edits:
        if key in tensors:
            _edit_tensor(tensors, op, key, arg)
    what, value = meta
    if what in ("plan", "junk"):
        metadata["plan"] = value
    elif what == "format":
        metadata["format"] = value
    elif what == "no-plan":
        del metadata["plan"]
    return tensors, metadata


def _edit_tensor(tensors: dict, op: str, key: str, arg) -> None:
    value = tensors[key]
    if op == "shape":
        shape = (value.numel() + 1,) if arg == "numel+1" else arg
        tensors[key] = torch.ones(shape, dtype=value.dtype)
    elif op == "dtype":
        tensors[key] = value.to(getattr(torch, arg))
    elif op in ("nan", "inf", "negative", "zero") and value.is_floating_point():
        fill = {"nan": math.nan, "inf": math.inf, "negative": -1.0, "zero": 0.0}[op]
        changed = value.clone()
        changed.view(-1)[: max(1, changed.numel() // 2)] = fill
        tensors[key] = changed
    elif op == "rename":
        tensors[arg] = tensors.pop(key)
    elif op == "delete":
        del tensors[key]
    elif op == "add":
        buffer, shape = arg
        tensors[f"{key.rpartition('.')[0]}.{buffer}"] = torch.ones(shape)


def test_state_files(fuzz_long, tmp_path):
    """restore_state of a mutated file: exactly the file's state, or an error and no change."""
    from qruntime.state import restore_state, save_state
    from safetensors import safe_open
    from safetensors.torch import save_file

    path, again = tmp_path / "state.safetensors", tmp_path / "again.safetensors"

    def check(args):
        tensors, metadata = edited_state(*args)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
        model = zoo.build(MODEL)
        before = fingerprint(model)
        with watchdog(30.0), memory_ceiling(2 << 30):
            try:
                restore_state(model, path)
            except allowed_errors() as exc:
                check_document_error(exc)
                assert same(fingerprint(model), before), "a refused file changed the model"
                return "rejected"
            assert hazard_free(model)
            for key, value in tensors.items():
                if value.is_floating_point():
                    assert torch.isfinite(value).all(), f"accepted a non-finite {key}"
            save_state(model, again)
            with safe_open(str(again), framework="pt") as handle:
                saved = {k: handle.get_tensor(k) for k in handle.keys()}
                plan_again = handle.metadata()["plan"]
            assert saved.keys() == tensors.keys(), "restored buffers differ from the file's"
            for key, value in tensors.items():
                assert _equal(saved[key], value), f"{key}: restored differs from the file"
            assert _same_plan(plan_again, metadata["plan"]), "restored plan differs"
            check_forward(model)
        return "restored"

    seeds = (  # found by the suite (issue 11): bare KeyError/ValueError, NaN/shape accepted
        ([], ("no-plan", None)),
        ([], ("format", "")),
        ([("nan", "lm_head.input_quantizer._amax", None)], ("keep", None)),
        ([("shape", "mlp.0.weight_quantizer.0._amax", "numel+1")], ("keep", None)),
        ([("negative", "features.conv.weight_quantizer.0._amax", None)], ("keep", None)),
        ([("dtype", "lm_head.weight_quantizer._amax", "int32")], ("keep", None)),
        ([("rename", "lm_head.weight_quantizer._amax", "lm_head.weight")], ("keep", None)),
    )
    outcomes = run_fuzz("state", state_edits(), check, long=fuzz_long, seeds=seeds)
    assert outcomes["restored"] >= 1 and outcomes["rejected"] >= 1, outcomes


def hazard_free(model) -> bool:
    from qruntime.apply import applied_plan

    reason = hazard(applied_plan(model))
    assert reason is None, reason
    return True


def _same_plan(a: str, b: str) -> bool:
    """The quantizer states of two plan texts (sources and diagnostics aside)."""
    from qconfig.plan import Plan

    pa, pb = Plan.from_json(a), Plan.from_json(b)
    return {n: (q.enable, q.attributes) for n, q in pa.quantizers.items()} == {
        n: (q.enable, q.attributes) for n, q in pb.quantizers.items()
    }


# -- plans ----------------------------------------------------------------------------------------

PRESETS = ["INT8_DEFAULT_CFG", "FP8_DEFAULT_CFG", "W4A8_AWQ_BETA_CFG", "NVFP4_DEFAULT_CFG"]


@functools.cache
def plan_trees() -> tuple:
    """Plans of a few presets (calibration: max, or none) compiled for the model, as JSON."""
    import qconfig
    import qconfig.presets as presets

    manifest = qruntime.inventory(zoo.build(MODEL))
    out = [json.loads(qconfig.compile_plan(CONFIG, manifest).to_json())]
    for name in PRESETS:
        config = presets.get(name)
        config["algorithm"] = "max"
        out.append(json.loads(qconfig.compile_plan(config, manifest).to_json()))
    return tuple(out)


@st.composite
def plans(draw: st.DrawFn) -> str:
    tree = draw(st.sampled_from(plan_trees()))
    if draw(st.booleans()):
        tree = {**tree, "format": "qconfig.plan/v1"}
        del tree["specs"]
    return to_json(draw(mutated_json(tree, plan_domain, PLAN_KEYS)))


def test_plans_applied(fuzz_long):
    """apply_plan of a mutated plan: quantizers as the plan says and a finite forward, or an
    error and no change."""
    from qconfig.errors import DocumentError
    from qconfig.plan import Plan

    def check(text):
        try:
            plan = Plan.from_json(text)
        except DocumentError:
            return "not-a-plan"
        model = zoo.build(MODEL)
        before = fingerprint(model)
        with watchdog(30.0), memory_ceiling(2 << 30):
            try:
                qruntime.apply_plan(model, plan, _loop)
            except allowed_errors() as exc:
                check_document_error(exc)
                assert same(fingerprint(model), before), "a refused plan changed the model"
                return "rejected"
            reason = hazard(plan)
            assert reason is None, reason
            for name, q in plan.quantizers.items():
                module = model.get_submodule(name)
                assert module.is_enabled == q.enable, f"{name}: plan says enable={q.enable}"
            check_forward(model)
        return "applied"

    outcomes = run_fuzz("apply", plans(), check, long=fuzz_long)
    assert outcomes["applied"] >= 1 and outcomes["rejected"] + outcomes["not-a-plan"] >= 1


# -- configs, end to end ------------------------------------------------------------------------


def _only(name: str, cfg: dict) -> dict:
    """A config that quantizes the weights (INT8 per channel) and ``name`` with ``cfg``."""
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
            {"quantizer_name": name, "cfg": cfg},
        ],
        "algorithm": "max",
    }


#: Configs the long run found accepted by lint, compile and apply_plan, then failing at the
#: first forward: INT4 real quantization of a weight whose last dimension is odd (ValueError);
#: a rotation of a tensor whose last dimension is 1 (RuntimeError during calibration); an
#: unsigned quantizer on a weight with negative values (TypeError at every forward).
CONFIG_SEEDS = (
    _only(
        "features.conv.weight_quantizer",
        {"num_bits": 4, "fake_quant": False, "block_sizes": {-1: 128, "type": "static"}},
    ),
    _only("features.pool.output_quantizer", {"num_bits": 8, "rotate": True}),
    _only("lm_head.weight_quantizer", {"num_bits": 8, "unsigned": True}),
    _only("lm_head.weight_quantizer", {"num_bits": 1}),
    _only("lm_head.weight_quantizer", {"num_bits": 8, "axis": 5}),
    _only(
        "lm_head.input_quantizer", {"num_bits": 8, "use_constant_amax": True, "constant_amax": 1e39}
    ),
    # found by the long run: torch's padding overflows (a block of 10**9 would allocate instead)
    {"quant_cfg": {"*": {"block_sizes": {-1: 10**30}}}},
    _only("lm_head.input_quantizer", {"num_bits": 8, "block_sizes": {-1: 1 << 20}}),
)


@functools.cache
def subclass_manifest():
    return qruntime.inventory(zoo.build(MODEL))


def test_configs_applied(fuzz_long):
    """What load_config and compile_plan accept must quantize and run: apply_plan with max
    calibration then a forward with finite outputs, or a documented error and no change (the
    issue's "accepted, then NaN or a crash at the first forward")."""
    import qconfig
    from fuzz_structures import config_dicts
    from fuzz_text import materialize, mutated_trees

    def check(tree):
        data = materialize(tree)
        if not isinstance(data, dict):
            return "not-a-mapping"
        try:
            plan = qconfig.compile_plan(qconfig.load_config(data), subclass_manifest())
        except qconfig.ConfigError:
            return "rejected-config"
        model = zoo.build(MODEL)
        before = fingerprint(model)
        reason = hazard(plan)
        with watchdog(30.0), memory_ceiling(2 << 30):
            try:
                qruntime.apply_plan(model, plan, _loop)
            except allowed_errors() as exc:
                check_document_error(exc)
                assert same(fingerprint(model), before), "a refused plan changed the model"
                return "rejected-apply"
            assert reason is None, reason
            check_forward(model)
        return "applied"

    outcomes = run_fuzz(
        "configs-applied",
        st.one_of(config_dicts(), mutated_trees()),
        check,
        long=fuzz_long,
        seeds=CONFIG_SEEDS,
    )
    assert outcomes["applied"] >= outcomes.total() // 10, outcomes

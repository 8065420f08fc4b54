"""Hostile and wrong config *values* (issue 11): every one is a located error, never a traceback,
a hang or a silent wrong result.

The values here pass YAML/JSON parsing; what is wrong is what they mean: integer ``num_bits``
without a working float32 grid, an infinite ``constant_amax``, block sizes of 0, block types and
scale formats that do not exist, axes the layer does not have, legacy keys that are not patterns,
a trailing deny-all, lax types the published schema rejects. Where Model Optimizer 0.47.0 accepts
such a value and then yields NaN or fails at the first forward, the Model Optimizer side of the
difference is pinned in tests/qconfig/test_models.py and listed in docs/differences.md.
"""

import copy
import json
import math
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qconfig import ConfigError, compile_plan, load_config
from qconfig.blocks import MAX_BLOCK_SIZE
from qconfig.compile import CompileError
from qconfig.explain import explain
from qconfig.lint import lint
from qconfig.manifest import Manifest
from qconfig.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "examples" / "manifests").glob("*.json"))
LLAMA = Manifest.load(ROOT / "examples" / "manifests" / "llama_decoder.json")
SCHEMA = jsonschema.Draft7Validator(
    json.loads((ROOT / "schemas" / "qconfig-config.schema.json").read_text(encoding="utf-8"))
)
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def weights(cfg: Any) -> dict:
    """A config that configures every weight quantizer with ``cfg``."""
    return {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": cfg},
        ],
        "algorithm": "max",
    }


def as_yaml(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False)


def load_error(src: Any) -> Any:
    """The first diagnostic loading ``src`` gives; lint gives the same ones."""
    with pytest.raises(ConfigError) as info:
        load_config(src)
    messages = [d.message for d in info.value.diagnostics]
    assert [d.message for d in lint(src) if d.severity == "error"] == messages
    return info.value.diagnostics[0]


# -- 1. num_bits ---------------------------------------------------------------------------------


@FAST
@given(bits=st.integers(min_value=-(10**40), max_value=10**40), unsigned=st.booleans())
@example(bits=10**30, unsigned=False)
@example(bits=1, unsigned=False)
@example(bits=1, unsigned=True)
@example(bits=25, unsigned=True)
def test_integer_num_bits_outside_the_float32_grid_is_a_located_error(bits: int, unsigned: bool):
    """Accepted exactly in 2..25 (signed) / 1..24 (unsigned); the error says the range, at the
    line of the attribute set, without computing ``2 ** bits`` (10**30 used to hang)."""
    text = as_yaml(weights({"num_bits": bits, "unsigned": unsigned}))
    low, high = (1, 24) if unsigned else (2, 25)
    if low <= bits <= high:
        compile_plan(load_config(text), LLAMA)
        return
    diagnostic = load_error(text)
    assert (diagnostic.code, diagnostic.line, diagnostic.path) == ("QC003", 5, "quant_cfg[1].cfg")
    assert f"{low} to {high}" in diagnostic.message


def test_format_names_need_a_backend():
    diagnostic = load_error(weights({"num_bits": "nvfp4"}))
    assert "format names are for a custom `backend`" in diagnostic.message
    assert load_config(weights({"num_bits": "nvfp4", "backend": "mine"}))  # the backend's business


# -- 2. constant_amax ----------------------------------------------------------------------------


@pytest.mark.parametrize("amax", [math.inf, -math.inf, math.nan, 3.5e38, 1e300, 0.0, -1.0])
def test_constant_amax_must_be_a_positive_finite_float32(amax: float):
    diagnostic = load_error(weights({"num_bits": 8, "constant_amax": amax}))
    assert diagnostic.path == "quant_cfg[1].cfg.constant_amax"
    assert "constant_amax must be" in diagnostic.message


def test_constant_amax_at_the_float32_limit_is_fine():
    assert load_config(weights({"num_bits": 8, "constant_amax": 3.4028234663852886e38}))


# -- 3. block sizes ------------------------------------------------------------------------------

BAD_BLOCKS = [
    ({-1: 0}, "positive block size"),
    ({-1: -16}, "positive block size"),
    ({-1: 16, "type": "dynmic"}, "'static' or 'dynamic'"),
    ({-1: 16, "type": 5}, "'static' or 'dynamic'"),
    ({-1: 16, "scale_bits": "garbage"}, "scale_bits"),
    ({-1: 16, "scale_bits": [9, 9]}, "scale_bits"),
    ({-1: 16, "scale_bits": {"a": 1}}, "scale_bits"),
    ({-1: 16, "scale_block_sizes": {-1: 0}}, "positive block sizes"),
    ({-1: 16, "four_over_six": "no"}, "true or false"),
    ({-1: 16, "blocks": 3}, "Unknown block_sizes key"),
    ({"01": 16}, "Unknown block_sizes key"),
]


@pytest.mark.parametrize(("blocks", "message"), BAD_BLOCKS, ids=repr)
def test_bad_block_sizes_are_located_errors_with_and_without_a_manifest(blocks, message):
    text = as_yaml(weights({"num_bits": 4, "block_sizes": blocks}))
    diagnostic = load_error(text)
    assert diagnostic.code == "QC003" and message in diagnostic.message
    assert diagnostic.line is not None and diagnostic.path.startswith("quant_cfg[1].cfg")
    for manifest in MANIFESTS:  # with a manifest lint compiles: it must still only report
        found = lint(text, Manifest.load(manifest))
        assert {d.code for d in found if d.severity == "error"} == {"QC003"}


@FAST
@given(
    size=st.one_of(
        st.integers(min_value=-(2**40), max_value=2**40),
        st.sampled_from([0, 1, MAX_BLOCK_SIZE, MAX_BLOCK_SIZE + 1, 10**30]),
    ),
    axis=st.sampled_from([-1, 0, 1]),
)
def test_block_size_is_accepted_exactly_when_positive_and_at_most_the_limit(size: int, axis: int):
    """Static blocks pad every row to a multiple of the block: 10**30 overflows torch's padding
    at the first forward (Model Optimizer too), 10**9 allocates a billion elements per row."""
    text = as_yaml(weights({"num_bits": 4, "block_sizes": {axis: size}}))
    if size < 1:
        assert "positive block size" in load_error(text).message
    elif size > MAX_BLOCK_SIZE:
        assert f"at most {MAX_BLOCK_SIZE:,}" in load_error(text).message
    else:
        found = lint(text, LLAMA)  # QC209/QC210 may warn; nothing divides by zero
        assert not [d for d in found if d.severity == "error"]


# -- 4. axes the layer does not have -------------------------------------------------------------


@FAST
@given(axis=st.one_of(st.integers(-6, 6), st.tuples(st.integers(-4, 4), st.integers(-4, 4))))
def test_an_axis_the_weight_lacks_is_a_compile_error_naming_the_quantizer(axis):
    """Model Optimizer drops such an axis at the first forward (per tensor instead of per
    channel); every weight of the example manifest is 2-D."""
    config = load_config(weights({"num_bits": 8, "axis": axis}))
    axes = axis if isinstance(axis, tuple) else (axis,)
    if all(-2 <= a < 2 for a in axes):
        compile_plan(config, LLAMA)
        return
    with pytest.raises(CompileError) as info:
        compile_plan(config, LLAMA)
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "QC104" and diagnostic.path == "quant_cfg[1].cfg"
    assert "weight_quantizer" in diagnostic.message and "does not exist" in diagnostic.message


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"num_bits": 4, "block_sizes": {5: 16}}, "block_sizes axis 5 does not exist"),
        ({"num_bits": 4, "block_sizes": {-3: 16, -1: 16}}, "block_sizes axis -3 does not exist"),
        (
            {"num_bits": [2, 1], "block_sizes": {0: 16, "type": "dynamic", "scale_bits": [8, 0]}},
            "dynamic blocks need the last axis",
        ),
        ({"num_bits": 8, "bias": {5: None}}, "bias axis 5 does not exist"),
        (
            {"num_bits": 8, "rotate": {"enable": True, "block_size": 64}},
            "rotate.block_size 64 does not divide the last dimension",
        ),
    ],
)
def test_block_bias_and_rotation_misfits_are_reported_by_lint_where_written(cfg, message):
    text = as_yaml(weights(cfg))
    found = [d for d in lint(text, LLAMA) if d.severity == "error"]  # one per problem
    assert {(d.code, d.line, d.path) for d in found} == {("QC104", 5, "quant_cfg[1].cfg")}
    assert all(message in d.message for d in found)
    assert not [d for d in lint(text) if d.severity == "error"]  # needs the weight shapes


def test_rotation_without_a_block_needs_an_even_last_dimension():
    """A 3x3 convolution weight has no power-of-2 block to rotate in (Model Optimizer raises
    at every forward); the CNN example's linear layers are fine."""
    cnn = Manifest.load(ROOT / "examples" / "manifests" / "cnn.json")
    with pytest.raises(CompileError) as info:
        compile_plan(load_config(weights({"num_bits": 8, "rotate": True})), cnn)
    messages = [d.message for d in info.value.diagnostics]
    assert messages and all("rotate needs a power-of-2 block" in m for m in messages)
    assert all(", 3]" in m for m in messages)  # ... weight [c_out, c_in, 3, 3] ...


def test_axes_of_disabled_and_input_quantizers_are_not_checked():
    config = load_config(
        {
            "quant_cfg": [
                {"quantizer_name": "*", "enable": False},
                {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": 7}},
                {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 7}},
                {"quantizer_name": "*weight_quantizer", "enable": False},
            ]
        }
    )
    compile_plan(config, LLAMA, weight_check=False)


# -- 5. legacy keys that are not patterns --------------------------------------------------------

LEGACY_TEXTS = [
    ("quant_cfg: {1: 8}\n", (1, 16), "quant_cfg[1]"),
    ("quant_cfg:\n  - {2: {num_bits: 8}}\n", (2, 5), "quant_cfg[0]"),
    ('quant_cfg: {"nn.Linear": {1: 8, "*": {num_bits: 8}}}\n', (1, 13), "quant_cfg['nn.Linear']"),
    ('quant_cfg: [{"nn.Linear": {"*": {num_bits: 8}}, 3: 8}]\n', (1, 13), "quant_cfg[0]"),
]


@pytest.mark.parametrize(("text", "position", "path"), LEGACY_TEXTS)
def test_legacy_pattern_keys_must_be_strings(text, position, path):
    diagnostic = load_error(text)
    assert (diagnostic.code, (diagnostic.line, diagnostic.column)) == ("QC003", position)
    assert diagnostic.path == path and "pattern key" in diagnostic.message
    assert [d.code for d in lint(text, LLAMA)] == ["QC003"]


@pytest.mark.parametrize(
    "quant_cfg",
    [{1: 8}, {None: {"num_bits": 8}}, {1.5: 8}, [{2: 8}], {"nn.Linear": {None: {"num_bits": 8}}}],
    ids=repr,
)
def test_non_string_patterns_from_python_are_value_errors_naming_quant_cfg(quant_cfg):
    """The Python API (no loader in between) gets the same sentence as a ValueError."""
    from qconfig.quantize import QuantizeConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(ValueError, match=r"quant_cfg.*pattern key .*must be a string"):
            QuantizeConfig(quant_cfg=quant_cfg)


def test_int_keys_inside_a_legacy_value_are_located():
    text = 'quant_cfg: {"*weight_quantizer": {1: {num_bits: 8}}}\n'
    assert load_error(text).path == "quant_cfg['*weight_quantizer'][1]"


# -- 6. what the config alone proves -------------------------------------------------------------

TRAILING_DEFAULT = """\
quant_cfg:
  "*weight_quantizer": {num_bits: 8, axis: 0}
  "*input_quantizer": {num_bits: 8, axis: null}
  default: {enable: false}
"""


def test_trailing_default_disable_is_an_error_without_a_manifest():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        errors = [d for d in lint(TRAILING_DEFAULT) if d.severity == "error"]
        with_manifest = {d.code for d in lint(TRAILING_DEFAULT, LLAMA) if d.severity == "error"}
    (found,) = errors
    assert (found.code, found.line, found.path) == ("QC215", 4, "quant_cfg.default")
    assert "QC102" in found.message and "'*weight_quantizer'" in found.message
    assert with_manifest == {"QC102", "QC215"}


@pytest.mark.parametrize(
    ("entries", "fires"),
    [
        ([("*input_quantizer", True), ("*", False)], True),
        ([("*input_quantizer", True), ("*", False), ("*lm_head*", False)], True),
        ([("*input_quantizer", True), ("**", False)], True),
        ([("*", False), ("*input_quantizer", True)], False),
        ([("*input_quantizer", True), ("*", False), ("*weight_quantizer", True)], False),
        ([("*", False), ("*lm_head*", False)], False),  # nothing enabled: an exclusion list
        ([("*input_quantizer", True), ("*_quantizer", False)], False),  # not every quantizer
    ],
)
def test_qc215_fires_only_when_every_quantizer_provably_ends_disabled(entries, fires):
    quant_cfg = [
        {"quantizer_name": name, "cfg": {"num_bits": 8}}
        if on
        else {"quantizer_name": name, "enable": False}
        for name, on in entries
    ]
    codes = [d.code for d in lint({"quant_cfg": quant_cfg})]
    assert ("QC215" in codes) == fires


# -- 7. lint is at least as strict as the published schema ---------------------------------------

#: Scalars the schema rejects in most places and pydantic's lax mode converts in many.
LAX = [
    "true", "false", "yes", "no", "on", "0", "1", "4.5", "8", "", 0, 1, 2, 1.0, 0.5, -1, True,
    False, None, "e4m3", "static", "max", [], {}, [1], {"a": 1}, 2**40,
]  # fmt: skip


def _leaves(node: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _leaves(value, (*path, index))
    return out


def _replace(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    doc = copy.deepcopy(doc)
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return doc


def _seed_documents() -> list[dict]:
    from qconfig.loader import PRESETS_DIR  # noqa: F401  (presets exist)

    examples = sorted((ROOT / "examples" / "configs").glob("*"))
    docs = []
    for path in examples:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if "imports" not in json.dumps(data):
            docs.append(data)
    docs += [
        weights(
            {"num_bits": 4, "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}}
        ),
        weights([{"num_bits": 4, "block_sizes": {"-1": 128}}, {"num_bits": [4, 3]}]),
        {"quant_cfg": {"*weight_quantizer": {"num_bits": 8, "axis": 0, "enable": True}}},
        {"quant_cfg": [{"nn.Linear": {"*": {"num_bits": 8, "rotate": {"enable": True}}}}]},
        {
            "algorithm": {"method": "max", "distributed_sync": True, "layerwise": {"enable": True}},
            "quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": 8, "bias": {"-1": None}}}],
        },
        {"metadata": {"recipe_type": "ptq"}, "quantize": weights({"num_bits": 8, "axis": 0})},
        {"algorithm": [None, {"method": "mse", "step_size": 0.1}], "effective_bits": 4.0},
    ]
    return docs


SEEDS = _seed_documents()


@st.composite
def mutated_document(draw) -> dict:
    doc = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 2))):
        path = draw(st.sampled_from(_leaves(doc)[1:]))
        doc = _replace(doc, path, draw(st.sampled_from(LAX)))
    return doc


@settings(FAST, max_examples=400)
@given(mutated_document())
@example(weights({"num_bits": 4, "block_sizes": {"-1": 16, "type": "dynmic"}}))
@example({"quant_cfg": [{"quantizer_name": "*", "enable": "false"}]})
@example(weights({"num_bits": True, "unsigned": True}))
@example(weights({"num_bits": 8, "effective_bits": "4.5"}))
@example({"quant_cfg": [], "algorithm": {"method": "max", "layerwise": {"enable": 1}}})
def test_lint_reports_an_error_for_every_document_the_schema_rejects(doc):
    """`lint --strict` used to pass values the published schema rejects (`type: dynmic`); now
    every such document gets at least one error, QC216 (lax types) only where the schema
    rejects, and no document crashes lint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        found = lint(doc)
    if not SCHEMA.is_valid(doc):
        schema_says = [e.message for e in SCHEMA.iter_errors(doc)][:2]
        assert [d for d in found if d.severity == "error"], (json.dumps(doc), schema_says)
    else:  # and QC216 never fires on what the schema accepts
        assert not [d for d in found if d.code == "QC216"], json.dumps(doc)


def test_lax_types_are_reported_where_they_are_written():
    text = """\
quant_cfg:
  - {quantizer_name: "*", enable: "false"}
  - quantizer_name: "*weight_quantizer"
    cfg: {num_bits: 8, axis: "0", unsigned: 1, rotate: {enable: "yes"}}
algorithm: {method: max, distributed_sync: "false"}
"""
    found = [(d.code, d.line, d.path) for d in lint(text)]
    assert found == [
        ("QC216", 2, "quant_cfg[0].enable"),
        ("QC216", 4, "quant_cfg[1].cfg.axis"),
        ("QC216", 4, "quant_cfg[1].cfg.unsigned"),
        ("QC216", 4, "quant_cfg[1].cfg.rotate.enable"),
        ("QC216", 5, "algorithm.distributed_sync"),
    ]


# -- 8. whatever reaches compile, the plan file, explain and lint --------------------------------

VALUES = {
    "num_bits": [8, 4, 2, 25, 1, 0, -3, 10**30, [4, 3], [2, 1], [5, 2], [9, 9], "e4m3", "x", True],
    "axis": [None, 0, -1, 1, 2, -3, [0, 1], [0, 5], [], "0"],
    "block_sizes": [
        None, {}, {"-1": 16}, {"-1": 0}, {"-1": -4}, {"-1": None}, {"5": 16}, {"-1": 16, "type": "dynamic"},
        {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}, {"-1": 32, "type": "dynamic", "scale_bits": [8, 0]},
        {"-1": 16, "type": "x"}, {"-1": 16, "scale_bits": "x"}, {"-1": 16, "scale_block_sizes": {"-1": 4}},
        {"0": 8, "-1": 8}, {"-1": 16, "four_over_six": True},
    ],
    "bias": [None, {"-1": None}, {"-1": None, "type": "dynamic", "method": "max_min"}, {"0": True},
             {"7": None}, {"type": "static"}, {}],
    "rotate": [False, True, {"enable": True, "mode": "rotate_back", "block_size": 16},
               {"enable": False}, {"block_size": 0}, {"mode": "x"}, 3],
    "constant_amax": [None, 1.0, 448.0, 0.0, -1.0, 1e39],
    "use_constant_amax": [False, True],
    "calibrator": ["max", "histogram", "x", ["max"]],
    "type": ["static", "dynamic", "x"],
    "unsigned": [False, True],
    "narrow_range": [False, True],
    "pass_through_bwd": [True, False],
    "backend": [None, "mine"],
    "backend_extra_args": [None, {"a": [1, {"b": None}]}, {"enable": True}],
    "effective_bits": [None, 4.5, 0, 17],
    "trt_high_precision_dtype": ["Float", "Half", "x"],
    "fake_quant": [True, False],
    "enable": [True, False],
}  # fmt: skip


@st.composite
def attribute_set(draw) -> dict:
    keys = draw(st.lists(st.sampled_from(sorted(VALUES)), min_size=1, max_size=5, unique=True))
    return {key: draw(st.sampled_from(VALUES[key])) for key in keys}


@settings(FAST, max_examples=300)
@given(
    cfg=st.one_of(attribute_set(), st.lists(attribute_set(), min_size=1, max_size=3)),
    pattern=st.sampled_from(["*weight_quantizer", "*input_quantizer", "*", "*mlp*"]),
    manifest=st.sampled_from(MANIFESTS),
)
def test_attribute_sets_never_crash_compile_plan_files_explain_or_lint(cfg, pattern, manifest):
    """load_config → compile_plan → plan JSON round trip → explain, and lint with the manifest:
    a ConfigError (CompileError included) or a result, nothing else."""
    doc = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": pattern, "cfg": cfg},
        ],
        "algorithm": "max",
    }
    model = Manifest.load(manifest)
    lint(as_yaml(doc), model)
    try:
        config = load_config(doc)
        plan = compile_plan(config, model, weight_check=False)
    except ConfigError:
        return
    again = Plan.from_json(plan.to_json())
    assert again.to_json() == plan.to_json()
    for name in list(plan.quantizers)[:3]:
        assert str(explain(config, model, name))


def test_a_plan_with_a_tuple_bias_axis_value_reads_back():
    config = load_config(weights({"num_bits": 8, "bias": {"-1": [1, 2]}}))
    plan = compile_plan(config, LLAMA)
    assert Plan.from_json(plan.to_json()).to_json() == plan.to_json()


@pytest.mark.parametrize(
    "algorithm",
    [
        {"method": "mse", "stop_multiplier": float("inf")},
        {"method": "mse", "step_size": float("inf")},
        {"method": "local_hessian", "start_multiplier": float("nan")},
        {"method": "smoothquant", "alpha": float("nan")},
    ],
)
def test_algorithm_options_must_be_finite(algorithm):
    """Model Optimizer accepts an infinite search range (docs/differences.md); the search would
    never end and a plan file could not hold it, so it is refused where it is written."""
    text = f"quant_cfg: []\nalgorithm:\n  method: {algorithm['method']}\n"
    for key, value in algorithm.items():
        if key != "method":
            text += f"  {key}: {'.inf' if value == float('inf') else '.nan'}\n"
    with pytest.raises(ConfigError, match="finite number") as caught:
        load_config(text)
    assert caught.value.diagnostics[0].line == 2

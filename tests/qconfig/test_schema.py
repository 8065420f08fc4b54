"""The published JSON Schemas: fresh, valid draft-07, and in agreement with the models.

Agreement is checked the way users meet it: a JSON-shaped document (string keys, lists) is
valid for the editor exactly when ``qconfig.load_config`` (loader restorations + pydantic)
accepts it. Hypothesis generates the documents; the few rules draft-07 cannot state are kept out
of the exact comparison and checked one way only (schema accepts ⊇ models accept), and the places
where the schema is deliberately stricter each have a test below. docs/schema.md lists both.
"""

import copy
import json
import re
import warnings
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from qconfig import ConfigError, load_config, presets
from qconfig.algorithms import ALGORITHMS
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.entries import QuantizerCfgEntry
from qconfig.loader import PRESETS_DIR
from qconfig.schema import KINDS, SCHEMA_FILES, json_schema, render, write_schemas

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples" / "configs"
VALIDATOR = jsonschema.Draft7Validator(json_schema("config"))


def jsonish(value: Any) -> Any:
    """What an editor sees: every mapping key a string, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): jsonish(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonish(v) for v in value]
    return value


def model_accepts(doc: dict) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy forms warn
        try:
            load_config(copy.deepcopy(doc))
        except ConfigError:
            return False
    return True


def schema_errors(doc: Any, kind: str = "config") -> list[str]:
    validator = VALIDATOR if kind == "config" else jsonschema.Draft7Validator(json_schema(kind))
    return [f"{list(e.absolute_path)}: {e.message[:300]}" for e in validator.iter_errors(doc)]


# -- the files in schemas/ ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_checked_in_schema_is_fresh(kind):
    path = SCHEMAS / SCHEMA_FILES[kind]
    assert path.is_file(), f"{path} is missing: run `make schemas`"
    assert path.read_text(encoding="utf-8") == render(kind), (
        f"{path} is stale: run `make schemas` (or qconfig.schema.write_schemas('schemas'))"
    )


def test_write_schemas_writes_every_kind(tmp_path):
    paths = write_schemas(tmp_path / "out")
    assert sorted(p.name for p in paths) == sorted(SCHEMA_FILES.values())
    for kind in KINDS:
        text = (tmp_path / "out" / SCHEMA_FILES[kind]).read_text(encoding="utf-8")
        assert text.endswith("}\n") and json.loads(text) == json_schema(kind)
        assert (
            text
            == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="manifest"):
        json_schema("recipe")


def test_json_schema_returns_a_private_copy():
    first = json_schema("config")
    first["definitions"].clear()
    assert json_schema("config")["definitions"]


@pytest.mark.parametrize("kind", KINDS)
def test_is_valid_draft_07_without_newer_keywords(kind):
    schema = json_schema(kind)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    text = json.dumps(schema)
    for newer in (
        "$defs",
        "prefixItems",
        "$dynamicRef",
        "unevaluatedProperties",
        "dependentRequired",
    ):
        assert f'"{newer}"' not in text, newer
    for ref in re.findall(r'"\$ref": "([^"]+)"', text):
        name = ref.removeprefix("#/definitions/")
        assert ref.startswith("#/definitions/") and name in schema["definitions"], ref


def _walk_objects(node: Any, path: str = ""):
    """Every closed object schema (the ones that describe fields), with where it is."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False and "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _walk_objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk_objects(value, f"{path}/{i}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_markdown_description_and_default(kind):
    schema = json_schema(kind)
    objects = list(_walk_objects(schema))
    assert len(objects) >= 5
    for where, obj in objects:
        for name, prop in obj["properties"].items():
            if prop is False:  # "must be absent" inside a rule
                continue
            assert prop.get("markdownDescription"), f"{where}.{name} has no markdownDescription"
            assert "default" in prop, f"{where}.{name} has no default"


def test_definitions_have_exactly_the_model_fields():
    definitions = json_schema("config")["definitions"]
    attributes = set(QuantizerAttributeConfig.model_fields)
    assert set(definitions["QuantizerAttributeConfig"]["properties"]) == attributes | {"$import"}
    assert set(definitions["LegacyQuantizerCfg"]["properties"]) == attributes | {"$import"}
    assert set(definitions["QuantizerCfgEntry"]["properties"]) == set(
        QuantizerCfgEntry.model_fields
    ) | {"$import"}
    for cls in ALGORITHMS.values():
        assert set(definitions[cls.__name__]["properties"]) == set(cls.model_fields)
    assert set(definitions["QuantizeConfigFile"]["properties"]) == {
        "quant_cfg",
        "algorithm",
        "effective_bits",
        "$schema",
        "imports",
        "$import",
    }


def test_enums_and_completion_helpers():
    d = json_schema("config")["definitions"]
    props = d["QuantizerAttributeConfig"]["properties"]
    assert props["type"]["enum"] == ["static", "dynamic"]
    assert props["trt_high_precision_dtype"]["enum"] == ["Float", "Half", "BFloat16"]
    assert props["calibrator"]["enum"] == ["max", "histogram"]
    assert d["RotateConfig"]["properties"]["mode"]["enum"] == ["rotate", "rotate_back"]
    assert [4, 3] in props["num_bits"]["examples"] and "e4m3" in props["num_bits"]["examples"]
    entry = d["QuantizerCfgEntry"]["properties"]
    assert (
        entry["quantizer_name"]["examples"]
        == QuantizerCfgEntry.model_fields["quantizer_name"].examples
    )
    assert "nn.Linear" in entry["parent_class"]["examples"]
    algorithm = d["QuantizeConfig"]["properties"]["algorithm"]
    names = algorithm["anyOf"][1]
    methods = [m for m in ALGORITHMS if m is not None]
    assert names["enum"] == methods
    assert len(names["markdownEnumDescriptions"]) == len(methods)
    snippets = algorithm["anyOf"][2]["defaultSnippets"]
    assert [s["body"]["method"] for s in snippets] == methods
    for snippet in snippets:  # each snippet is itself a valid algorithm
        assert model_accepts({"algorithm": snippet["body"]}), snippet
        assert not schema_errors({"algorithm": snippet["body"]})


def test_entry_snippets_are_valid_entries():
    items = json_schema("config")["definitions"]["QuantizeConfig"]["properties"]["quant_cfg"][
        "anyOf"
    ][0]["items"]
    bodies = {s["label"]: s["body"] for s in items["defaultSnippets"]}
    assert bodies["deny all"] == {"quantizer_name": "*", "enable": False}
    assert bodies["KV-cache entry"]["quantizer_name"] == "*[kv]_bmm_quantizer"
    assert {"weight entry", "input entry"} <= set(bodies)
    doc = {"quant_cfg": list(bodies.values())}
    assert model_accepts(doc) and not schema_errors(doc)


# -- presets and examples ---------------------------------------------------------------------

REFERENCE = json.loads((ROOT / "tests/data/presets-0.47.json").read_text())


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_validates(name):
    """As resolved by qconfig (with tuples/int keys made JSON-shaped) and as 0.47.0 dumped it."""
    assert schema_errors(jsonish(presets.get(name))) == []
    assert schema_errors(REFERENCE[name]) == []


def _yaml_documents(path: Path) -> list[Any]:
    return [jsonish(doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("path", sorted(PRESETS_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_file_validates_as_written(path):
    """The files themselves, with their ``imports``/``$import`` references unresolved."""
    for doc in _yaml_documents(path):
        assert schema_errors(doc) == []


def _example_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


def test_there_are_example_configs():
    suffixes = {p.suffix for p in _example_files()}
    assert {".yaml", ".json"} <= suffixes


@pytest.mark.parametrize("path", _example_files(), ids=lambda p: p.name)
def test_every_example_config_validates_and_loads(path):
    if path.suffix == ".json":
        docs = [json.loads(path.read_text(encoding="utf-8"))]
    else:
        docs = _yaml_documents(path)
    for doc in docs:
        assert schema_errors(doc) == []
    load_config(path)
    text = path.read_text(encoding="utf-8")
    marker = (
        '"$schema": "../../schemas/'
        if path.suffix == ".json"
        else ("# yaml-language-server: $schema=../../schemas/")
    )
    assert marker + SCHEMA_FILES["config"] in text, "examples must be wired to the schema"


def test_int8_example_is_int8_default():
    config = load_config(EXAMPLES / "int8_default.yaml")
    reference = load_config(presets.get("INT8_DEFAULT_CFG"))
    assert config.model_dump(exclude_unset=True) == reference.model_dump(exclude_unset=True)


def test_recipe_and_header_documents():
    recipe = {
        "$schema": "x",
        "imports": {"fp8": "qconfig/units/fp8"},
        "metadata": {"recipe_type": "ptq", "description": "FP8"},
        "quantize": {
            "algorithm": "max",
            "quant_cfg": [{"quantizer_name": "*input_quantizer", "cfg": {"$import": "fp8"}}],
        },
    }
    assert schema_errors(recipe) == [] and model_accepts(recipe)
    assert schema_errors({**recipe, "metadata": {"recipe_type": "qat"}})
    assert schema_errors({**recipe, "quant_cfg": []})  # a recipe has no top-level quant_cfg
    assert schema_errors({"metadata": {"recipe_type": "ptq"}})  # quantize is required
    # each document of a header + body file is validated on its own by editors
    assert schema_errors({"imports": {"fp8": "qconfig/units/fp8"}}) == []


# -- documented differences from Model Optimizer: schema stricter ------------------------------


def _entry_with(**cfg: Any) -> dict:
    return {"quant_cfg": [{"quantizer_name": "*", "cfg": cfg}]}


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_entry_with(num_bits="int4"), id="num_bits-name-without-backend"),
        pytest.param(_entry_with(calibrator=["max"]), id="calibrator-tuple"),
        pytest.param(_entry_with(block_sizes={"-1": 16, "type": "bogus"}), id="block-type-value"),
        pytest.param(
            _entry_with(block_sizes={"-1": 16, "scale_bits": "e4"}), id="scale-bits-value"
        ),
        pytest.param(
            _entry_with(block_sizes={"-1": 16, "four_over_six": "yes"}), id="four-over-six"
        ),
        pytest.param(_entry_with(num_bits=True), id="one-signed-bit"),
        pytest.param(_entry_with(num_bits=26), id="num-bits-beyond-float32"),
        pytest.param(_entry_with(block_sizes={"-1": 0}), id="block-size-zero"),
        pytest.param(_entry_with(constant_amax=1e39), id="constant-amax-beyond-float32"),
    ],
)
def test_schema_and_models_reject_what_model_optimizer_accepts_but_cannot_run(doc):
    """Model Optimizer accepts these and then fails, yields NaN or silently ignores them
    (docs/differences.md; tests/qconfig/test_models.py pins its side); the schema used to be
    the only one to say so, now the models refuse them too."""
    assert not model_accepts(doc)
    assert schema_errors(doc)


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(_entry_with(enable=True, num_bits=8, axis=0, unsigned="false"), id="lax-bool"),
        pytest.param(_entry_with(num_bits=True, unsigned=True), id="bool-as-int"),
        pytest.param(_entry_with(effective_bits="4.5"), id="numeric-string"),
        pytest.param(_entry_with(num_bits=8, axis="0"), id="numeric-string-axis"),
    ],
)
def test_schema_is_deliberately_stricter_and_lint_reports_it(doc):
    """pydantic's lax coercions: accepted by the models (as by Model Optimizer), rejected by
    the schema, and reported by lint as error QC216 so that `lint` is never laxer than editors."""
    from qconfig.lint import lint

    assert model_accepts(doc)
    assert schema_errors(doc)
    assert [d.code for d in lint(doc) if d.severity == "error"] == ["QC216"]


# -- agreement with the models (hypothesis) ----------------------------------------------------
#
# Every value is drawn from a pool of values that are fine on their own and, about one time in
# eight, from a pool of values both sides must reject; so most documents have zero or one fault
# and the cross-field rules (axis vs block_sizes, FP formats vs dynamic blocks, empty cfg, ...)
# decide the outcome often enough to be tested.


def pick(valid: Any, invalid: Any = ()) -> st.SearchStrategy:
    """``valid``/``invalid``: lists of values or strategies."""

    def pool(values: Any) -> st.SearchStrategy:
        if isinstance(values, st.SearchStrategy):
            return values
        return st.one_of(*(v if isinstance(v, st.SearchStrategy) else st.just(v) for v in values))

    good = pool(valid)
    if not invalid:
        return good
    bad = pool(invalid)
    return rarely(8).flatmap(lambda is_bad: bad if is_bad else good)


def rarely(n: int) -> st.SearchStrategy:
    """True one time in ``n``. ``sampled_from`` draws uniformly, where ``integers(0, n)`` would
    favour its bounds; it also shrinks towards ``False``, the valid side."""
    return st.sampled_from([False] * (n - 1) + [True])


PATTERNS = st.sampled_from(["*", "*weight_quantizer", "*input_quantizer", "*lm_head*", "default"])
BOOL = st.booleans()


def _num_bits(backend: bool) -> st.SearchStrategy:
    valid = [8, 4, [4, 3], [2, 1], "e4m3", "E2M1", "e04m03"]
    dynamic_only = [[5, 2], [1, 2], [3, 2], [2, 3], "e5m2", "E3M2"]  # fine with dynamic blocks
    v2_rejects = [0, -2, [0, 3], [3, 0], [9, 9], [4, -3], "e0m3", "e9m9"]
    invalid = [[4, 3, 1], 4.5, None]
    if backend:  # V2 is off, and a format name is only meaningful with a backend
        valid += [*v2_rejects, "nvfp4", "my_format"]
    else:
        invalid += v2_rejects
    return pick([st.sampled_from(valid), st.sampled_from(dynamic_only)], invalid)


BLOCK_SIZE = pick([16, 32, 128, None, -3], ["x", [4, 3]])
BIAS_AXIS = pick([None, "static", "mean", [0], True, 3], ["weird", 1.5])
BIAS_TYPE = pick(["static", "dynamic"], ["other"])
BIAS_METHOD = pick(["mean", "max_min"], ["median"])


@st.composite
def block_sizes(draw) -> Any:
    if draw(rarely(10)):
        return draw(st.sampled_from([None, "16", [16]]))
    out: dict[str, Any] = {}
    dynamic = draw(st.booleans())
    axes = draw(
        st.lists(st.sampled_from(["-1", "-2", "0", "1"]), min_size=1, max_size=2, unique=True)
    )
    if draw(rarely(6)):
        axes = [] if draw(st.booleans()) else ["-1", "-2"]  # dynamic needs exactly one
    elif dynamic:
        axes = axes[:1]
    for axis in axes:
        out[axis] = draw(BLOCK_SIZE)
    if dynamic or draw(st.booleans()):
        out["type"] = "dynamic" if dynamic else "static"
    for key, values in (
        ("scale_bits", [[4, 3], [8, 0], "e8m0", "E4M3", "e9m9", None, 8]),
        ("scale_block_sizes", [None, {"-1": 16}]),
        ("four_over_six", [True, False, 1, 0]),
    ):
        if draw(rarely(3 if key == "scale_bits" else 7)):
            out[key] = draw(st.sampled_from(values))
    if draw(rarely(10)):
        bad_key, bad_value = draw(
            st.sampled_from([("01", 16), ("blocks", 16), ("scale_block_sizes", {"-1": "x"})])
        )
        out[bad_key] = bad_value
    return out


@st.composite
def bias(draw) -> Any:
    if draw(rarely(10)):
        return draw(st.sampled_from([None, {}, [1], {"type": "static"}]))
    out: dict[str, Any] = {}
    for axis in draw(
        st.lists(st.sampled_from(["-1", "-2", "-4"]), min_size=1, max_size=2, unique=True)
    ):
        out[axis] = draw(BIAS_AXIS)
    if draw(st.booleans()):
        out["type"] = draw(BIAS_TYPE)
    if draw(st.booleans()):
        out["method"] = draw(BIAS_METHOD)
    if draw(rarely(12)):
        out["01"] = None  # not an int key for the loader
    return out


ROTATE = pick(
    [
        True,
        False,
        {},
        {"enable": True},
        {"mode": "rotate_back", "rotate_fp32": True},
        {"block_size": 16},
    ],
    [{"mode": "x"}, {"block_size": 0}, {"block_size": True}, {"foo": 1}, 3],
)
EXTRA_ARGS = pick(
    [None, {}, {"a": 1}, {"rotate": {"enable": True}}, {"enable": True, "x": 1}, {"enable": False}],
    [{"enable": True}, {"x": [{"enable": True}]}, [1]],
)


ATTRIBUTE_FIELDS: dict[str, st.SearchStrategy] = {
    "num_bits": _num_bits(backend=False),
    "effective_bits": pick([None, 4.5, 16, 8], [0, -1, 17, "x"]),
    "axis": pick([None, 0, -1, [0, 1], []], ["x", [0.5]]),
    "fake_quant": pick(BOOL, ["maybe"]),
    "unsigned": BOOL,
    "narrow_range": BOOL,
    "learn_amax": pick([False], [True]),
    "type": pick(["static", "dynamic"], ["dynamc", 5]),
    "block_sizes": block_sizes(),
    "bias": bias(),
    "trt_high_precision_dtype": pick(["Float", "Half", "BFloat16"], ["float"]),
    "calibrator": pick(["max", "histogram"], ["entropy"]),
    "rotate": ROTATE,
    "pass_through_bwd": BOOL,
    "backend_extra_args": EXTRA_ARGS,
    "use_constant_amax": BOOL,
    "constant_amax": pick([None, 448.0, 1], [0, -1.5]),
}
NUM_BITS_WITH_BACKEND = _num_bits(backend=True)
ENABLE = pick(BOOL, [None, "maybe", 2])
LEGACY_ENABLE = pick([True, False, None], ["maybe", 2])


@st.composite
def attributes(draw, *, legacy: bool = False) -> dict:
    backend = draw(rarely(5))
    names = ["enable", *ATTRIBUTE_FIELDS]
    if draw(rarely(6)):  # block_sizes with an explicit axis: the V5 conflict
        chosen = ["axis", "block_sizes"]
    else:
        chosen = draw(st.lists(st.sampled_from(names), max_size=5, unique=True))
    out = {}
    for key in chosen:
        if key == "enable":
            out[key] = draw(LEGACY_ENABLE if legacy else ENABLE)
        elif key == "num_bits" and backend:
            out[key] = draw(NUM_BITS_WITH_BACKEND)
        else:
            out[key] = draw(ATTRIBUTE_FIELDS[key])
    if backend:
        out["backend"] = "my_backend"
    if draw(rarely(25)):
        out["num_bit"] = 8  # a typo
    return out


@st.composite
def cfg_value(draw) -> Any:
    shape = draw(st.sampled_from(["none", "dict", "dict", "dict", "list", "empty", "mixed"]))
    if shape == "none":
        return None
    if shape == "dict":
        return draw(attributes())
    if shape == "list":
        return draw(st.lists(attributes(), min_size=1, max_size=2))
    if shape == "mixed":
        return [{}, draw(attributes())]
    return draw(EMPTY_CFG)  # allowed only with enable: false


QUANTIZER_NAME = pick(PATTERNS, [5])
PARENT_CLASS = pick([None, "nn.Linear"], [3])
ENTRY_ENABLE = pick(BOOL, [None, "maybe"])
EMPTY_CFG = st.sampled_from([{}, [], [{}, {}]])


@st.composite
def entry(draw) -> dict:
    out: dict[str, Any] = {}
    if not draw(rarely(16)):
        out["quantizer_name"] = draw(QUANTIZER_NAME)
    if draw(st.booleans()):
        out["parent_class"] = draw(PARENT_CLASS)
    has_cfg = not draw(rarely(3))
    if has_cfg:
        out["cfg"] = draw(cfg_value())
    if draw(st.booleans()) or (not has_cfg and not draw(rarely(8))):
        out["enable"] = draw(ENTRY_ENABLE)
    if draw(rarely(20)):
        out["enabled"] = True
    return out


LEGACY_VALUE = pick(
    [attributes(legacy=True), st.lists(attributes(), min_size=1, max_size=2), None],
    [8, "x", [], [{}]],
)
SCOPED_VALUE = pick(
    st.dictionaries(PATTERNS, attributes(legacy=True), max_size=2),
    [8, {"*": [{"num_bits": 8}]}, {"*": None}],
)


@st.composite
def legacy_pairs(draw, *, entry: bool) -> dict:
    out: dict[str, Any] = {}
    keys = draw(st.lists(PATTERNS, min_size=1 if entry else 0, max_size=3, unique=True))
    if entry and len(keys) > 1 and not draw(rarely(4)):
        keys = keys[:1]  # several plain pairs in one element are invalid; keep it rare
    for key in keys:
        out[key] = draw(LEGACY_VALUE)
    if draw(st.booleans()):
        out[draw(st.sampled_from(["nn.Linear", "nn.Conv2d"]))] = draw(SCOPED_VALUE)
    if draw(rarely(20)):
        out["quantizer_name"] = "*"
    return out


QUANT_CFG = pick(
    [
        st.lists(st.one_of(entry(), entry(), legacy_pairs(entry=True)), max_size=3),
        legacy_pairs(entry=False),
    ],
    [None, "x", [[{}]], [None], [{}]],
)

LAYERWISE = pick(
    [None, {}, {"enable": True}, {"enable": True, "checkpoint_dir": "c"}, {"save_every": 3}],
    [
        {"checkpoint_dir": "/tmp/x"},
        {"calib_mutates_weights": False},
        {"save_every": 0},
        {"bogus": 1},
        7,
    ],
)
SCALE_ALGORITHM = pick(
    [{"method": "max"}, {}, {"step_size": 0.2}, {"step_size": 0.2, "block_size": 8}],
    [{"method": "gptq"}, {"method": "mse", "block_size": 3}, "max"],
)
_ALGORITHM_VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "moe_calib_experts_ratio": ([None, 0.5, 1.0], [0, 1.5]),
    "shared_states": (
        [None, {}, {"weight_global_amax": {"patterns": ["a.*"]}}, {"weight_global_amax": {}}],
        [{"other": {}}, {"weight_global_amax": {"x": []}}],
    ),
    "distributed_sync": ([True, None], ["x"]),
    "sync_expert_weight_amax": ([True, False], []),
    "skip_forward_without_activation_calib": ([True], []),
    "step_size": ([0.1, None], [0, -1]),
    "start_multiplier": ([0.5], []),
    "stop_multiplier": ([4.0], [0]),
    "fp8_scale_sweep": ([True, None], []),
    "block_size": ([16, None], [0]),
    "debug": ([True, None], []),
    "alpha": ([0.5, None], [1.5]),
    "alpha_step": ([0.1, 1.0], [0]),
    "max_co_batch_size": ([1024, None, -5], []),
    "max_tokens_per_batch": ([64, None], []),
    "min_clip_ratio": ([0.5], [1.0, 0]),
    "shrink_step": ([0.05, 1], [0]),
    "lowrank": ([32, None], []),
    "skip_layers": ([None, ["*lm_head*"]], ["x"]),
    "perc_damp": ([0.01], [0, 2]),
    "fused": ([True], []),
    "anchor_percentile": ([1.0, 100], [0, 101]),
    "upper_percentile": ([99.99], []),
    "rho": ([16384.0], [28672.0, 0]),
    "learnable_amax": ([["post"], [], ["pre", "post"], "pre"], [["x"]]),
    "tied_amax": ([True, False], []),
    "quantize_pre_scale": ([True], []),
}
ALGORITHM_FIELDS: dict[str, st.SearchStrategy] = {
    name: pick(valid, invalid) for name, (valid, invalid) in _ALGORITHM_VALUES.items()
}
ALGORITHM_FIELDS.update(
    layerwise=LAYERWISE, weight_scale_algorithm=SCALE_ALGORITHM, scale_algorithm=SCALE_ALGORITHM
)
METHODS = [m for m in ALGORITHMS if m is not None]


METHOD = pick([*METHODS, None], ["awq", "missing"])


@st.composite
def algorithm_mapping(draw) -> dict:
    method = draw(METHOD)
    cls = ALGORITHMS.get(method, ALGORITHMS["max"])
    names = sorted(set(cls.model_fields) - {"method"})
    out: dict[str, Any] = {} if method == "missing" else {"method": method}
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        out[name] = draw(ALGORITHM_FIELDS[name])
    if draw(rarely(12)):
        out["bogus"] = 1
    return out


ALGORITHM_STEP = pick([st.sampled_from([None, *METHODS]), algorithm_mapping()], ["awq", 3])
ALGORITHM = pick([ALGORITHM_STEP, st.lists(ALGORITHM_STEP, max_size=3)], [[["max"]]])


EFFECTIVE_BITS = pick([None, 4], [0, 17])
METADATA = pick(
    [{"recipe_type": "ptq"}, {"recipe_type": "ptq", "description": "d"}],
    [{"recipe_type": "qat"}, {"description": "d"}, {"recipe_type": "ptq", "x": 1}],
)


@st.composite
def config_document(draw) -> dict:
    doc: dict[str, Any] = {}
    if not draw(rarely(6)):
        doc["quant_cfg"] = draw(QUANT_CFG)
    if draw(st.booleans()):
        doc["algorithm"] = draw(ALGORITHM)
    if draw(rarely(6)):
        doc["effective_bits"] = draw(EFFECTIVE_BITS)
    if draw(rarely(30)):
        doc["bogus"] = 1
    if draw(rarely(6)):  # the recipe form
        doc = {"metadata": draw(METADATA), "quantize": doc}
    if draw(rarely(4)):
        doc["$schema"] = "../../schemas/qconfig-config.schema.json"
    return doc


AGREEMENT = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


@AGREEMENT
@given(config_document())
@example({"quant_cfg": [{"quantizer_name": "*", "cfg": {"enable": True}}]})
@example({"quant_cfg": [{"quantizer_name": "*", "cfg": {}, "enable": False}]})
@example({"quant_cfg": [{"*": {"enable": True}}, {"*": {}, "nn.Linear": {"*": {"enable": False}}}]})
@example(
    {"quant_cfg": {"default": {"num_bits": 8}, "nn.Conv2d": {"*weight_quantizer": {"num_bits": 4}}}}
)
@example(
    {
        "quant_cfg": [
            {
                "quantizer_name": "*",
                "cfg": {"num_bits": "e5m2", "block_sizes": {"-1": 32, "type": "dynamic"}},
            }
        ]
    }
)
@example(
    {
        "quant_cfg": [
            {
                "quantizer_name": "*",
                "cfg": {"num_bits": 4, "block_sizes": {"-1": 32, "-2": 2, "type": "dynamic"}},
            }
        ]
    }
)
@example({"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": -1, "backend": "b"}}]})
@example(
    {"algorithm": {"method": "nvfp4_act_headroom", "weight_scale_algorithm": {"step_size": 0.2}}}
)
@example({"algorithm": {"method": "lsq", "tied_amax": True, "learnable_amax": ["post", "pre"]}})
def test_schema_accepts_exactly_what_the_models_accept(doc):
    _assert_agree(doc)


def _assert_agree(doc: dict) -> None:
    accepted = model_accepts(doc)
    if VALIDATOR.is_valid(doc) == accepted:
        return
    errors = schema_errors(doc)
    assert (not errors) == accepted, (
        f"schema {'rejects' if errors else 'accepts'} but load_config "
        f"{'accepts' if accepted else 'rejects'}: {json.dumps(doc)}\n{errors[:3]}"
    )


@AGREEMENT
@given(st.one_of(attributes(), st.lists(attributes(), min_size=1, max_size=2)))
def test_attribute_rules_agree(cfg):
    """One entry per document, so every example exercises V1-V9 on a fresh attribute set."""
    _assert_agree({"quant_cfg": [{"quantizer_name": "*weight_quantizer", "cfg": cfg}]})


@settings(AGREEMENT, max_examples=150)
@given(algorithm_mapping())
def test_algorithm_rules_agree(algorithm):
    _assert_agree({"algorithm": algorithm})


# Rules draft-07 cannot state (docs/schema.md): checked one way only.
INEXPRESSIBLE = st.sampled_from(
    [
        {
            "algorithm": {
                "method": "max",
                "shared_states": {"weight_global_amax": {"patterns": ["a("]}},
            }
        },
        {
            "algorithm": {
                "method": "mse",
                "shared_states": {"weight_global_amax": {"patterns": ["*x"]}},
            }
        },
        {
            "quant_cfg": [
                {"quantizer_name": "*", "cfg": {"block_sizes": {"0": 8, "-0": 8, "type": "static"}}}
            ]
        },
    ]
)


@settings(AGREEMENT, max_examples=150)
@given(st.one_of(config_document(), INEXPRESSIBLE))
def test_schema_never_rejects_what_the_models_accept(doc):
    """The direction that matters for editors: a valid config never shows a red squiggle."""
    if model_accepts(doc):
        assert VALIDATOR.is_valid(doc), f"{json.dumps(doc)}\n{schema_errors(doc)[:3]}"


def test_inexpressible_rules_are_left_to_the_loader():
    for doc in (
        {
            "algorithm": {
                "method": "max",
                "shared_states": {"weight_global_amax": {"patterns": ["a("]}},
            }
        },
        {"quant_cfg": [{"quantizer_name": "*", "cfg": {"$import": "nowhere"}}]},
    ):
        assert schema_errors(doc) == [] and not model_accepts(doc)


VERDICTS = json.loads((ROOT / "tests/e2e/node/fixtures/verdicts.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", VERDICTS, ids=[c["name"] for c in VERDICTS])
def test_verdict_fixtures_match_schema_and_models(case):
    """The corpus ajv is checked against (tests/e2e/node/ajv.test.mjs) is right for Python too."""
    assert (not schema_errors(case["doc"])) == case["valid"]
    assert model_accepts(case["doc"]) == case.get("model_accepts", case["valid"])


# -- manifest and plan --------------------------------------------------------------------------


def _manifest():
    from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

    def site(attribute: str, **defaults: Any) -> QuantizerSite:
        return QuantizerSite(attribute=attribute, defaults=QuantizerAttributeConfig(**defaults))

    linear = [site("input_quantizer"), site("weight_quantizer", axis=0)]
    return Manifest(
        model="tiny",
        registry_keys=["nn.Linear", "nn.Embedding", "nn.LeakyReLU"]
        + [f"nn.BatchNorm{d}d" for d in (1, 2, 3)],
        modules=[
            ModuleSite(
                name=name,
                class_name="Linear",
                registry_key="nn.Linear",
                parent_class_keys=["nn.Linear"],
                weight_shape=[16, 16],
                weight_dtype="torch.float32",
                quantizers=linear,
            )
            for name in ("layers.0.mlp.up_proj", "lm_head")
        ],
    )


def test_manifest_json_validates():
    from qconfig.manifest import Manifest

    manifest = _manifest()
    doc = json.loads(manifest.to_json())
    assert schema_errors(doc, "manifest") == []
    Manifest.from_json(json.dumps(doc))  # what the schema accepts, the reader reads
    doc["modules"][0]["quantizers"][0]["defaults"]["num_bit"] = 8
    assert schema_errors(doc, "manifest")


@pytest.mark.parametrize(
    "path", sorted((ROOT / "examples" / "manifests").glob("*.json")), ids=lambda p: p.name
)
def test_example_manifests_and_their_plans_validate(path):
    from qconfig import compile_plan
    from qconfig.manifest import Manifest

    assert schema_errors(json.loads(path.read_text(encoding="utf-8")), "manifest") == []
    plan = compile_plan(load_config(EXAMPLES / "w4a8_awq.yaml"), Manifest.load(path))
    assert schema_errors(json.loads(plan.to_json()), "plan") == []


@pytest.mark.parametrize("name", ["INT8_DEFAULT_CFG", "NVFP4_AWQ_FULL_CFG", "W4A8_AWQ_BETA_CFG"])
def test_plan_json_validates(name):
    from qconfig import compile_plan
    from qconfig.plan import Plan

    plan = compile_plan(load_config(presets.get(name)), _manifest())
    doc = json.loads(plan.to_json())
    assert schema_errors(doc, "plan") == []
    Plan.from_json(json.dumps(doc))
    doc["states"][doc["quantizers"]["lm_head.weight_quantizer"]]["enabled"] = True
    assert schema_errors(doc, "plan")

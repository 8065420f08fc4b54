"""``qconfig.spec`` and ``qconfig.keys``: the one resolved form of a quantizer's attributes, and
the one rule for integer keys written as JSON strings; the plan carries specs (format v2) and
still reads v1 files."""

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from qconfig import presets
from qconfig.attributes import QuantizerAttributeConfig, RotateConfig
from qconfig.compile import compile_plan
from qconfig.errors import DocumentError
from qconfig.keys import int_key, restore_int_keys
from qconfig.loader import load_config
from qconfig.manifest import Manifest
from qconfig.plan import Plan
from qconfig.spec import RotationSpec, resolve_spec

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / "examples/manifests/llama_decoder.json"
V1_PLAN = ROOT / "tests/data/plan_v1_llama_w4a8_awq.json"


# -- integer keys -----------------------------------------------------------------------------
@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_int_key_restores_every_decimal_spelling(n: int) -> None:
    assert int_key(str(n)) == n
    assert int_key(n) == n


@pytest.mark.parametrize(
    "key", ["01", "-01", "--1", "+1", " 1", "1 ", "1\n", "²", "\u0661", "1.0", ""]
)
def test_int_key_leaves_other_strings_alone(key: str) -> None:
    assert int_key(key) == key


def test_restore_int_keys_only_under_axis_fields() -> None:
    raw = {"block_sizes": {"-1": 16, "type": "dynamic"}, "backend_extra_args": {"1": "x"}}
    assert restore_int_keys(raw) == {
        "block_sizes": {-1: 16, "type": "dynamic"},
        "backend_extra_args": {"1": "x"},
    }


@pytest.mark.parametrize("key", ["--1", "²", "01"])
def test_manifest_with_a_malformed_axis_key_is_a_validation_error(key: str) -> None:
    """These keys used to crash ``int()`` ("--1", "²") or be silently renumbered ("01").
    (A DocumentError at the key's JSON path since issue 11; it was pydantic's ValidationError.)"""
    doc = json.loads(LLAMA.read_text())
    site = doc["modules"][1]["quantizers"][0]
    site["defaults"] = {"num_bits": 4, "block_sizes": {key: 16}}
    with pytest.raises(DocumentError, match="Unknown block_sizes key") as caught:
        Manifest.from_json(json.dumps(doc))
    assert caught.value.path == ("modules", 1, "quantizers", 0, "defaults", "block_sizes")


# -- the resolved spec --------------------------------------------------------------------------
def _attribute_sets() -> list[QuantizerAttributeConfig]:
    out = []
    for name in presets.names():
        config = load_config(presets.get(name))
        for entry in config.quant_cfg:
            cfgs = entry.cfg if isinstance(entry.cfg, list) else [entry.cfg]
            out += [QuantizerAttributeConfig.model_validate(dict(c)) for c in cfgs if c]
    return out


ATTRIBUTE_SETS = _attribute_sets()


@pytest.mark.parametrize("attrs", ATTRIBUTE_SETS, ids=lambda a: str(a.num_bits))
def test_spec_of_every_preset_attribute_set(attrs: QuantizerAttributeConfig) -> None:
    spec = resolve_spec(attrs)
    assert (spec.num_bits, spec.axis, spec.type) == (attrs.num_bits, attrs.axis, attrs.type)
    assert spec.block_sizes == attrs.block_sizes and spec.bias == attrs.bias
    blocks = attrs.block_sizes or {}
    axes = {k: v for k, v in blocks.items() if isinstance(k, int)}
    scale = blocks.get("scale_bits")
    if blocks.get("type") == "dynamic" and scale == (8, 0):
        assert spec.family == "mx"
    elif scale == (4, 3):
        assert spec.family == "nvfp4"
    else:
        assert spec.family == ("int" if isinstance(attrs.num_bits, int) else "fp")
    if axes and all(v is None for v in axes.values()):
        assert spec.strategy == "token"
    elif attrs.block_sizes is not None:
        assert spec.strategy == "block" and spec.block_axes == axes
    else:
        assert spec.strategy == ("tensor" if attrs.axis is None else "channel")


@given(
    bits=st.sampled_from([4, 8, (4, 3), (2, 1)]),
    axis=st.sampled_from([None, 0, -1, (0, 1)]),
    dynamic=st.booleans(),
    rotate=st.sampled_from([False, True, {"enable": True, "mode": "rotate_back"}]),
)
def test_dict_and_model_resolve_alike(bits, axis, dynamic, rotate) -> None:
    """A plain dict (missing keys = defaults) and the validated model give the same spec, JSON
    spellings (lists, string keys) included."""
    raw = {"num_bits": bits, "axis": axis, "type": "dynamic" if dynamic else "static"}
    raw["rotate"] = rotate
    model = QuantizerAttributeConfig.model_validate(raw)
    as_json = json.loads(json.dumps(raw))
    assert resolve_spec(model) == resolve_spec(raw) == resolve_spec(as_json)
    assert resolve_spec(model).rotate == RotationSpec(
        enable=bool(rotate), mode="rotate_back" if isinstance(rotate, dict) else "rotate"
    )


def test_rotate_config_resolves() -> None:
    spec = resolve_spec(QuantizerAttributeConfig(rotate=RotateConfig(enable=True, block_size=64)))
    assert spec.rotate == RotationSpec(enable=True, block_size=64)
    assert not spec.rotate.rotate_back


def test_dynamic_blocks_without_a_scale_format_have_no_family() -> None:
    spec = resolve_spec({"num_bits": 4, "block_sizes": {-1: 32, "type": "dynamic"}})
    assert spec.family is None and spec.strategy == "block" and spec.is_dynamic_block


# -- plans carry specs; v1 files load ---------------------------------------------------------
def _plan() -> Plan:
    return compile_plan(load_config(presets.get("W4A8_AWQ_BETA_CFG")), Manifest.load(LLAMA))


def test_plan_quantizers_carry_their_resolved_spec() -> None:
    plan = _plan()
    for q in plan.quantizers.values():
        if q.is_sequential:
            assert q.spec == tuple(resolve_spec(a) for a in q.attributes)
        else:
            assert q.spec == resolve_spec(q.attributes)


def test_plan_v2_round_trip_with_specs() -> None:
    plan = _plan()
    doc = json.loads(plan.to_json())
    assert doc["format"] == "qconfig.plan/v2"
    assert len(doc["specs"]) == len(doc["attribute_sets"])
    assert {s["family"] for s in doc["specs"]} == {"int", "fp"}
    again = Plan.from_json(plan.to_json())
    assert again.to_json() == plan.to_json()


def test_a_v1_plan_still_loads() -> None:
    """tests/data/plan_v1_llama_w4a8_awq.json was written by the v1 code for the same config and
    manifest: it reads back to the plan compiled today."""
    old = Plan.from_json(V1_PLAN.read_text())
    new = _plan()
    assert json.loads(V1_PLAN.read_text())["format"] == "qconfig.plan/v1"
    assert old.quantizers == new.quantizers
    assert old.algorithm == new.algorithm
    assert old.to_json() == new.to_json()


def test_plan_with_specs_that_disagree_with_attributes_is_refused() -> None:
    doc = json.loads(_plan().to_json())
    doc["attribute_sets"][0]["num_bits"] = 8  # edited by hand, spec left as it was
    with pytest.raises(ValueError, match=r"specs\[0\].*does not match attribute_sets\[0\]"):
        Plan.from_json(json.dumps(doc))


def test_not_a_plan_is_refused() -> None:
    with pytest.raises(ValueError, match="not a plan document"):
        Plan.from_json('{"format": "qconfig.plan/v9"}')
    with pytest.raises(ValueError, match="not a plan document"):
        Plan.from_json("[1, 2]")

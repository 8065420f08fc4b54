"""Unit tests of the config models (docs/model-optimizer-rules.md), checked against nvidia-modelopt
0.47.0 wherever it can answer the same question.

``both(op)`` runs ``op`` once with Model Optimizer's config module and once with ``qconfig``
(which exports the same class names) and compares what came back, exception types included.
"""

import copy
import math
import re
import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import modelopt.torch.quantization.config as mc
import pytest
import qconfig as qc
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from qconfig.algorithms import ALGORITHMS, algorithm_class, known_methods
from qconfig.quantize import resolve_algorithms


def plain(value: Any) -> Any:
    """Models → their dumps, recursively, with types kept (``1`` vs ``True``, tuple vs list)."""
    if isinstance(value, BaseModel):
        return ("model", type(value).__name__, plain(value.model_dump()))
    if isinstance(value, dict):
        return ("dict", tuple((plain(k), plain(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(plain(v) for v in value))
    if isinstance(value, float) and math.isnan(value):
        return ("float", "nan")
    return (type(value).__name__, value)


def outcome(op: Callable[[Any], Any], module: Any) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return ("ok", plain(op(module)))
        except Exception as exc:
            return ("raises", type(exc).__name__)


def both(op: Callable[[Any], Any]) -> tuple:
    """Run ``op(mc)`` and ``op(qc)``; assert they agree; return qconfig's outcome."""
    mo, ours = outcome(op, mc), outcome(op, qc)
    assert ours == mo
    return ours


def errors(cls: type, raw: dict) -> list[tuple[tuple, str, str]]:
    """``(loc, type, msg)`` of each error ``cls(**raw)`` raises (``[]`` if it validates)."""
    try:
        cls(**copy.deepcopy(raw))
    except ValidationError as exc:
        return [(err["loc"], err["type"], err["msg"]) for err in exc.errors()]
    return []


# ---------------------------------------------------------------------------------------------
# 'Config objects': the mapping protocol
# ---------------------------------------------------------------------------------------------


def _append_then_revalidate(m: Any) -> Any:
    cfg = m.QuantizeConfig(quant_cfg=[{"quantizer_name": "*", "enable": False}])
    cfg["quant_cfg"].append({"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4}})
    return m.QuantizeConfig(**cfg)


def _update(m: Any) -> Any:
    cfg = m.QuantizeConfig()
    cfg.update({"algorithm": None, "quant_cfg": {"*": {"enable": False}}})
    return cfg


def _setitem(m: Any) -> Any:
    cfg = m.QuantizeConfig()
    cfg["quant_cfg"] = [{"*": {"enable": False}}, {"*input_quantizer": {"num_bits": 8}}]
    return cfg


def _setdefault(m: Any) -> Any:
    cfg = m.QuantizeConfig(algorithm="mse")
    return cfg.setdefault("algorithm", "max"), cfg.setdefault("effective_bits", 4.5)


def _assign_attribute(m: Any) -> Any:
    attrs = m.QuantizerAttributeConfig(num_bits=4)
    attrs["num_bits"] = 0  # the model validator (V2) runs on assignment too


def _assign_axis_then_block_sizes(m: Any) -> Any:
    attrs = m.QuantizerAttributeConfig(axis=0)
    attrs.block_sizes = {-1: 16}  # V5 reads the stored axis


def _attribute_pop(m: Any) -> Any:
    return m.QuantizerAttributeConfig().pop("num_bits")


MAPPING_OPS: dict[str, Callable[[Any], Any]] = {
    "getitem": lambda m: m.QuantizeConfig(algorithm="mse")["algorithm"],
    "getitem unknown": lambda m: m.QuantizeConfig()["nope"],
    "get": lambda m: m.QuantizeConfig(algorithm=None).get("algorithm", 5),
    "get unknown": lambda m: m.QuantizeConfig().get("nope", 5),
    "get unknown no default": lambda m: m.QuantizeConfig().get("nope"),
    "iter attributes": lambda m: list(m.QuantizerAttributeConfig(num_bits=4)),
    "iter entry": lambda m: list(m.QuantizerCfgEntry(quantizer_name="*", enable=False)),
    "keys": lambda m: list(m.QuantizeConfig().keys()),
    "values": lambda m: list(m.QuantizeConfig().values()),
    "items": lambda m: list(m.QuantizeConfig().items()),
    "dict()": lambda m: dict(m.RotateConfig(enable=True)),
    "**": lambda m: m.QuantizerAttributeConfig(**m.QuantizerAttributeConfig(num_bits=(4, 3))),
    "len": lambda m: [
        len(m.QuantizeConfig()),
        len(m.QuantizerAttributeConfig()),
        len(m.QuantizerCfgEntry(quantizer_name="*", enable=True)),
        len(m.GPTQCalibConfig()),
    ],
    "in (unset field)": lambda m: "effective_bits" in m.QuantizeConfig(),
    "in (unset entry field)": lambda m: (
        "parent_class" in m.QuantizerCfgEntry(quantizer_name="*", enable=True)
    ),
    "in unknown": lambda m: "nope" in m.QuantizeConfig(),
    "is a MutableMapping": lambda m: isinstance(m.QuantizeConfig(), MutableMapping),
    "append then revalidate": _append_then_revalidate,
    "append is not validated": lambda m: m.QuantizeConfig()["quant_cfg"].append(5),
    "update": _update,
    "update invalid": lambda m: m.QuantizeConfig().update({"algorithm": 5}),
    "update unknown": lambda m: m.QuantizeConfig().update({"nope": 5}),
    "setitem normalizes": _setitem,
    "setitem invalid": lambda m: m.QuantizeConfig().__setitem__("effective_bits", 17),
    "setitem unknown": lambda m: m.QuantizeConfig().__setitem__("nope", 1),
    "setattr unknown": lambda m: setattr(m.QuantizeConfig(), "nope", 1),
    "assignment runs model validators": _assign_attribute,
    "assignment runs field validators": _assign_axis_then_block_sizes,
    "setdefault": _setdefault,
    "setdefault unknown": lambda m: m.QuantizeConfig().setdefault("nope", 1),
    "del": lambda m: m.QuantizeConfig().__delitem__("algorithm"),
    "pop": _attribute_pop,
    "pop unknown with default": lambda m: m.QuantizeConfig().pop("nope", 7),
    "popitem": lambda m: m.QuantizeConfig().popitem(),
    "clear": lambda m: m.QuantizeConfig().clear(),
    "dump keeps tuples": lambda m: m.QuantizerAttributeConfig(num_bits=[4, 3]).model_dump(),
    "dump json": lambda m: m.QuantizerAttributeConfig(num_bits=(4, 3), axis=[0]).model_dump_json(),
    "sparse dump": lambda m: m.QuantizeConfig(algorithm=None).model_dump(exclude_unset=True),
    "equality": lambda m: m.RotateConfig(enable=True) == m.RotateConfig(enable=True),
}


@pytest.mark.parametrize("op", list(MAPPING_OPS.values()), ids=list(MAPPING_OPS))
def test_mapping_protocol_matches_modelopt(op: Callable[[Any], Any]):
    both(op)


def test_mapping_protocol_details():
    cfg = qc.QuantizeConfig()
    assert list(cfg) == ["quant_cfg", "algorithm", "effective_bits"]
    assert list(qc.QuantizerAttributeConfig()) == list(qc.QuantizerAttributeConfig.model_fields)
    assert len(qc.QuantizerAttributeConfig()) == 19
    assert "effective_bits" in cfg and "nope" not in cfg
    assert 1 not in cfg  # Model Optimizer's `in` raises AssertionError for a non-str key
    with pytest.raises(KeyError):
        cfg["nope"]
    with pytest.raises(KeyError):
        cfg["nope"] = 1
    with pytest.raises(TypeError, match="cannot be deleted"):
        del cfg["algorithm"]
    cfg["quant_cfg"].append({"quantizer_name": "*", "enable": False})
    assert cfg.get("quant_cfg")[-1] == {"quantizer_name": "*", "enable": False}
    assert isinstance(cfg, Mapping)


def test_every_class_has_modelopts_fields_in_order_and_defaults():
    classes = [
        "QuantizeConfig",
        "QuantizerAttributeConfig",
        "RotateConfig",
        "CompressConfig",
        "LayerwiseConfig",
        *(cls.__name__ for cls in ALGORITHMS.values()),
    ]
    for name in classes:
        ours, theirs = getattr(qc, name), getattr(mc, name)
        assert list(ours.model_fields) == list(theirs.model_fields), name
        assert plain(ours().model_dump()) == plain(theirs().model_dump()), name
        assert ours().model_dump(exclude_unset=True) == theirs().model_dump(exclude_unset=True)
    assert list(qc.QuantizerCfgEntry.model_fields) == list(mc.QuantizerCfgEntry.model_fields)


# ---------------------------------------------------------------------------------------------
# 'Attribute validation': validators V1-V9: same verdict and location as Model Optimizer, our message
# ---------------------------------------------------------------------------------------------

NAN = float("nan")

VALIDATOR_CASES = [
    # (id, raw, loc, our message (a substring), Model Optimizer's message if it differs)
    (
        "V1 top level",
        {"enable": True},
        (),
        "Invalid quantizer config: Cannot specify only {'enable': True}. Additional "
        "parameters are required when enabling quantization.",
        None,
    ),
    ("V1 bias", {"num_bits": 4, "bias": {"enable": True}}, (), "Cannot specify only", None),
    ("V1 backend args", {"backend_extra_args": {"enable": True}}, (), "Cannot specify", None),
    (
        "V2 int",
        {"num_bits": 0},
        (),
        "num_bits must be a positive integer or a tuple of positive integers. 0",
        None,
    ),
    (
        "V2 tuple element",
        {"num_bits": (0, 3), "block_sizes": {-1: 16, "type": "dynamic"}},
        (),
        "num_bits must be a positive integer or a tuple of positive integers. (0, 3)",
        "num_bits must be a positive integer or a tuple of positive integers.",
    ),
    (
        "V2 unknown FP format",
        {"num_bits": (1, 1)},
        (),
        "num_bits (1, 1) is not a supported FP format. Supported FPx quantization formats: "
        "FP8 (E4M3, E5M2), FP6(E3M2, E2M3), FP4(E2M1).",
        "Supported FPx quantization formats: FP8 (E4M3, E5M2), FP6(E3M2, E2M3), FP4(E2M1).",
    ),
    (
        "V2 needs dynamic blocks",
        {"num_bits": (5, 2), "block_sizes": {-1: 32, "type": "static"}},
        (),
        "Only blockwise dynamic quantization is supported with quantization formats E5M2 "
        "(num_bits=(5, 2) needs block_sizes with type 'dynamic').",
        "Only blockwise dynamic quantization is supported with quantization formats "
        "E{num_bis[0]}M{num_bits[1]}.",
    ),
    ("V3", {"effective_bits": 16.5}, ("effective_bits",), "must be in (0, 16], got 16.5", None),
    ("V3 zero", {"effective_bits": 0}, ("effective_bits",), "must be in (0, 16], got 0.0", None),
    (
        "V4",
        {"learn_amax": True},
        ("learn_amax",),
        "learn_amax is deprecated and reserved for backward compatibility.",
        None,
    ),
    (
        "V5 axis",
        {"axis": 0, "block_sizes": {-1: 128}},
        ("block_sizes",),
        "axis must be None when block_sizes is not None.",
        None,
    ),
    (
        "V5 dynamic one axis",
        {"block_sizes": {"type": "dynamic"}},
        ("block_sizes",),
        "Dynamic block quantization only supports quantization last axis.",
        None,
    ),
    (
        "V5 unknown key",
        {"block_sizes": {-1: 16, "bogus": 1}},
        ("block_sizes",),
        "Unknown block_sizes key 'bogus': expected an int axis or one of ['type', "
        "'scale_bits', 'scale_block_sizes', 'four_over_six'].",
        "",
    ),
    (
        "V5 tuple size",
        {"block_sizes": {-1: (4, 3)}},
        ("block_sizes",),
        "block_sizes[-1] must be an int block size or null, got (4, 3).",
        "",
    ),
    (
        "V6 no axis",
        {"bias": {"type": "static"}},
        ("bias",),
        "The axis for bias computation is not specified.",
        None,
    ),
    (
        "V6 axis type",
        {"bias": {"axis": None}},
        ("bias",),
        "Invalid bias key 'axis': expected an int axis.",
        "Invalid axis type <class 'list'>, expected int",
    ),
    (
        "V7",
        {"calibrator": "minmax"},
        ("calibrator",),
        "calibrator must be 'max' or 'histogram', got 'minmax'.",
        "",
    ),
    ("V8", {"constant_amax": -1.0}, ("constant_amax",), "must be a positive value.", None),
    ("V8 NaN", {"constant_amax": NAN}, ("constant_amax",), "must be a positive value.", None),
    (
        "V9",
        {"use_constant_amax": True, "constant_amax": 1.0},
        (),
        "use_constant_amax and constant_amax are mutually exclusive; set only one.",
        None,
    ),
]


@pytest.mark.parametrize(
    ("raw", "loc", "message", "modelopt_message"),
    [case[1:] for case in VALIDATOR_CASES],
    ids=[case[0] for case in VALIDATOR_CASES],
)
def test_attribute_validator(raw: dict, loc: tuple, message: str, modelopt_message: str | None):
    (ours,) = errors(qc.QuantizerAttributeConfig, raw)
    (theirs,) = errors(mc.QuantizerAttributeConfig, raw)
    assert ours[0] == theirs[0] == loc
    assert ours[1] == "value_error"  # never an (empty) assertion error
    assert message in ours[2]
    their_text = re.sub(r"^(Value error|Assertion failed), ", "", theirs[2])
    if modelopt_message is None:
        assert message in their_text  # same words as Model Optimizer
    else:
        assert their_text == modelopt_message  # where we say more (or say anything)


@pytest.mark.parametrize(
    "raw",
    [
        {"enable": False},
        {"rotate": {"enable": True}},
        {"backend_extra_args": {"enable": True, "x": 1}},
        {"num_bits": (5, 2), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
        {"num_bits": 0, "backend": "custom"},
        {"num_bits": (7, 7), "backend": "custom"},
        {"effective_bits": 16},
        {"block_sizes": {}},
        {"bias": {-1: None, "type": "dynamic", "method": "max_min"}},
        {"constant_amax": 3.0e38},
        {"use_constant_amax": True},
        {"calibrator": (dict, (), {})},
        {"num_bits": 1, "unsigned": True},
        {"num_bits": 25},
        {"num_bits": 24, "unsigned": True},
        {"block_sizes": {-1: 16, "scale_bits": 8, "scale_block_sizes": {-1: 4}}},
    ],
    ids=repr,
)
def test_attribute_edges_accepted(raw: dict):
    assert errors(qc.QuantizerAttributeConfig, raw) == []
    assert errors(mc.QuantizerAttributeConfig, raw) == []


# (raw, a substring of our message) — Model Optimizer 0.47.0 accepts each of these and then
# yields NaN, fails at the first forward or silently does something else (docs/differences.md).
STRICTER_THAN_MODELOPT = [
    ({"num_bits": 1}, "use 2 to 25"),  # qmax 0: 0/0 = NaN
    ({"num_bits": True}, "use 2 to 25"),  # pydantic makes it 1
    ({"num_bits": 26}, "exact up to 25 bits"),
    ({"num_bits": 25, "unsigned": True}, "use 1 to 24"),
    ({"num_bits": 200}, "use 2 to 25"),  # inf grid: NaN
    ({"num_bits": 10**30}, "num_bits ~2**99"),  # hangs 2 ** (num_bits - 1)
    ({"num_bits": "e4m3"}, "is not a number format"),
    ({"num_bits": "nvfp4"}, "format names are for a custom `backend`"),
    ({"constant_amax": math.inf}, "finite float32"),
    ({"constant_amax": 1e39}, "finite float32"),
    ({"block_sizes": {-1: 0}}, "positive block size"),  # ZeroDivisionError at the first forward
    ({"block_sizes": {-1: -16}}, "positive block size"),
    ({"block_sizes": {-1: 16, "type": "bogus"}}, "'static' or 'dynamic'"),  # silently static
    ({"block_sizes": {-1: 16, "type": "dynmic"}}, "'static' or 'dynamic'"),
    ({"block_sizes": {-1: 16, "scale_bits": "e4"}}, "scale_bits"),
    ({"block_sizes": {-1: 16, "scale_bits": (7, 7)}}, "scale format"),
    ({"block_sizes": {-1: 16, "scale_bits": 0}}, "integer bit count from 2 to 25"),
    ({"block_sizes": {-1: 16, "scale_block_sizes": {-1: 0}}}, "positive block sizes"),
    ({"block_sizes": {-1: 16, "four_over_six": "no"}}, "true or false"),  # "no" is truthy
    ({"calibrator": ("my.Calibrator", (), {})}, "(class, args, kwargs)"),  # str not callable
    ({"calibrator": ["max"]}, "(class, args, kwargs)"),
]


@pytest.mark.parametrize(("raw", "message"), STRICTER_THAN_MODELOPT, ids=repr)
def test_attribute_values_modelopt_accepts_but_cannot_run_are_rejected(raw: dict, message: str):
    """One located ``value_error`` that says what is wrong; Model Optimizer accepts the value."""
    ((loc, kind, msg),) = errors(qc.QuantizerAttributeConfig, raw)
    assert kind == "value_error" and message in msg, msg
    assert loc in ((), ("block_sizes",), ("constant_amax",), ("calibrator",))
    assert errors(mc.QuantizerAttributeConfig, raw) == []


@pytest.mark.parametrize("backend", [None, "custom"])
@given(bits=st.integers(min_value=-(2**70), max_value=2**70), unsigned=st.booleans())
def test_integer_num_bits_range(bits: int, unsigned: bool, backend: str | None):
    """Integer bits are accepted exactly where the float32 grid is exact (2..25 signed, 1..24
    unsigned); a custom backend defines its own formats."""
    raw = {"num_bits": bits, "unsigned": unsigned, "backend": backend}
    valid = backend is not None or (1 + (not unsigned) <= bits <= 24 + (not unsigned))
    assert (errors(qc.QuantizerAttributeConfig, raw) == []) == valid


@pytest.mark.parametrize(
    ("raw", "field", "stored"),
    [
        ({"num_bits": True, "unsigned": True}, "num_bits", 1),
        ({"num_bits": 4.0}, "num_bits", 4),
        ({"num_bits": [4, 3]}, "num_bits", (4, 3)),
        ({"axis": [0, 1]}, "axis", (0, 1)),
        (
            {"block_sizes": {-1: 16, "four_over_six": True}},
            "block_sizes",
            {-1: 16, "four_over_six": 1},
        ),
        (
            {"block_sizes": {-1: 16, "scale_bits": [4, 3]}},
            "block_sizes",
            {-1: 16, "scale_bits": (4, 3)},
        ),
        ({"rotate": True}, "rotate", True),
        ({"enable": "false"}, "enable", False),
    ],
    ids=repr,
)
def test_attribute_coercions(raw: dict, field: str, stored: Any):
    ours = qc.QuantizerAttributeConfig(**raw)[field]
    assert plain(ours) == plain(stored) == plain(mc.QuantizerAttributeConfig(**raw)[field])


@pytest.mark.parametrize("raw", [{"num_bits": 4.5}, {"block_sizes": {"-1": 16}}], ids=repr)
def test_attribute_coercion_limits(raw: dict):
    assert errors(qc.QuantizerAttributeConfig, raw)
    assert errors(mc.QuantizerAttributeConfig, raw)


def test_attribute_helpers():
    from qconfig.attributes import block_axes, is_mx_format

    mx = {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}
    assert (
        block_axes(mx)
        == {-1: 32}
        == mc.QuantizerAttributeConfig._get_block_quant_axes_and_sizes(mx)
    )
    assert block_axes(None) is None
    assert is_mx_format(mx)
    assert not is_mx_format({-1: 16, "type": "dynamic", "scale_bits": (4, 3)})
    assert not is_mx_format(None)


# ---------------------------------------------------------------------------------------------
# 'Attribute validation': RotateConfig
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [True, False, 0, -4, 1.5, "16"], ids=repr)
def test_rotate_block_size_rejected(block_size: Any):
    message = f"block_size must be a positive int, got {block_size!r}"
    ((loc, kind, msg),) = errors(qc.RotateConfig, {"block_size": block_size})
    assert (loc, kind) == (("block_size",), "value_error") and message in msg
    assert errors(mc.RotateConfig, {"block_size": block_size}) == [(loc, kind, msg)]


@pytest.mark.parametrize("block_size", [3, 48, 100, 2**40 + 1])
def test_rotate_block_size_must_be_a_power_of_two(block_size: int):
    """Model Optimizer accepts it and its block Hadamard transform raises at every forward."""
    ((loc, kind, msg),) = errors(qc.RotateConfig, {"block_size": block_size})
    assert (loc, kind) == (("block_size",), "value_error") and "power of 2" in msg
    assert errors(mc.RotateConfig, {"block_size": block_size}) == []


def test_rotate_config():
    assert qc.RotateConfig(block_size=16).block_size == 16
    assert qc.RotateConfig(block_size=None).block_size is None
    assert errors(qc.RotateConfig, {"mode": "rotate_back"}) == []
    assert errors(qc.RotateConfig, {"mode": "back"})[0][0] == ("mode",)
    attrs = qc.QuantizerAttributeConfig(rotate={"enable": True, "mode": "rotate_back"})
    assert isinstance(attrs.rotate, qc.RotateConfig) and attrs.rotate.mode == "rotate_back"
    assert qc.QuantizerAttributeConfig(rotate=True).rotate is True
    both(lambda m: m.QuantizerAttributeConfig(rotate={"enable": True}).model_dump())


# ---------------------------------------------------------------------------------------------
# 'Entries of quant_cfg': QuantizerCfgEntry
# ---------------------------------------------------------------------------------------------

EMPTY_CFG = "QuantizerCfgEntry 'cfg' must specify at least one quantizer attribute"
NO_INSTRUCTION = "QuantizerCfgEntry must specify 'cfg', 'enable', or both."


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"quantizer_name": "*", "cfg": {}}, EMPTY_CFG),
        ({"quantizer_name": "*", "cfg": []}, EMPTY_CFG),
        ({"quantizer_name": "*", "cfg": [{}, {}]}, EMPTY_CFG),
        ({"quantizer_name": "*", "cfg": {}, "enable": True}, EMPTY_CFG),
        ({"quantizer_name": "*", "cfg": {}, "enable": 0}, EMPTY_CFG),  # not literally False
        ({"quantizer_name": "*"}, NO_INSTRUCTION),
        ({"quantizer_name": "*", "parent_class": "nn.Linear"}, NO_INSTRUCTION),
    ],
    ids=repr,
)
def test_entry_rejections(raw: dict, message: str):
    ((loc, kind, msg),) = errors(qc.QuantizerCfgEntry, raw)
    assert (loc, kind) == ((), "value_error") and message in msg
    assert repr(raw["quantizer_name"]) in msg
    ((their_loc, _, their_msg),) = errors(mc.QuantizerCfgEntry, raw)
    assert their_loc == loc and message in their_msg


@pytest.mark.parametrize(
    ("raw", "cfg", "enable"),
    [
        ({"quantizer_name": "*", "cfg": {}, "enable": False}, None, False),
        ({"quantizer_name": "*", "cfg": [], "enable": False}, None, False),
        ({"quantizer_name": "*", "cfg": [{}, {}], "enable": False}, None, False),
        ({"quantizer_name": "*", "cfg": None}, None, True),  # explicit None counts as set
        ({"quantizer_name": "*", "enable": "false"}, None, False),
        ({"quantizer_name": "*", "enable": 1}, None, True),
    ],
    ids=repr,
)
def test_entry_accepted(raw: dict, cfg: Any, enable: bool):
    entry = qc.QuantizerCfgEntry(**raw)
    assert (entry.cfg, entry.enable) == (cfg, enable)
    both(lambda m: m.QuantizerCfgEntry(**copy.deepcopy(raw)).model_dump(exclude_unset=True))


def test_entry_cfg_shapes():
    mixed = qc.QuantizerCfgEntry(quantizer_name="*", cfg=[{}, {"num_bits": 4}])
    assert isinstance(mixed.cfg, list) and mixed.cfg[0] == qc.QuantizerAttributeConfig()
    single = qc.QuantizerCfgEntry(quantizer_name="*", cfg={"num_bits": 4, "enable": False})
    assert isinstance(single.cfg, qc.QuantizerAttributeConfig) and single.enable is True
    assert single.cfg.enable is False  # kept inside cfg, ignored when applied ('Full replacement')
    assert errors(qc.QuantizerCfgEntry, {"quantizer_name": "*", "enable": None})[0][0] == (
        "enable",
    )
    # an error inside cfg is located at the cfg field and the attribute
    ((loc, _, _),) = errors(qc.QuantizerCfgEntry, {"quantizer_name": "*", "cfg": {"axis": "x"}})[:1]
    assert loc[0] == "cfg" and loc[-1] in ("axis", "int")


def test_entry_mapping_access():
    entry = qc.QuantizerCfgEntry(quantizer_name="*w*", cfg={"num_bits": 4})
    assert entry["cfg"]["num_bits"] == 4
    assert entry.get("parent_class") is None
    assert "enable" in entry and "parent_class" in entry
    assert dict(entry)["quantizer_name"] == "*w*"


# ---------------------------------------------------------------------------------------------
# 'Entries of quant_cfg': find_quant_cfg_entry_by_path
# ---------------------------------------------------------------------------------------------

FIND_LIST = [
    {"quantizer_name": "*", "enable": False},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8, "axis": None}},
    {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4}, "enable": False},
]


@pytest.mark.parametrize(
    "name", ["*weight_quantizer", "*input_quantizer", "*", "layer.weight_quantizer", "nope"]
)
@pytest.mark.parametrize("validated", [False, True])
def test_find_quant_cfg_entry_by_path(name: str, validated: bool):
    def op(m: Any) -> Any:
        entries = m.normalize_quant_cfg_list(FIND_LIST) if validated else FIND_LIST
        return m.find_quant_cfg_entry_by_path(entries, name)

    result = both(op)
    if name in ("layer.weight_quantizer", "nope"):  # exact comparison, no wildcards
        assert result == ("raises", "KeyError")
        with pytest.raises(KeyError, match=re.escape(f"quantizer_name={name!r}")):
            qc.find_quant_cfg_entry_by_path(FIND_LIST, name)
    else:
        found = qc.find_quant_cfg_entry_by_path(FIND_LIST, name)
        assert found is [e for e in FIND_LIST if e["quantizer_name"] == name][-1]


# ---------------------------------------------------------------------------------------------
# 'Calibration algorithm configs'
# ---------------------------------------------------------------------------------------------


def test_registry_and_mutates_weights():
    for method, cls in ALGORITHMS.items():
        assert cls.model_fields["method"].default == method
        theirs = getattr(mc, cls.__name__)
        assert cls.mutates_weights == theirs._mutates_weights, method
    assert algorithm_class("gptq") is qc.GPTQCalibConfig
    assert algorithm_class(None) is qc.QuantizeAlgorithmConfig
    for bad in ("awq", "", "MAX", 5, ["max"]):
        with pytest.raises(ValueError, match="known methods: " + ", ".join(known_methods())):
            algorithm_class(bad)


@pytest.mark.parametrize("method", list(ALGORITHMS), ids=str)
def test_calib_mutates_weights_rule(method: str | None):
    raw = {"method": method, "layerwise": {"enable": True, "calib_mutates_weights": False}}
    cls = ALGORITHMS[method]
    ours = errors(cls, raw)
    assert ours == errors(getattr(mc, cls.__name__), raw)
    if method in ("max", "mse", "local_hessian", "nvfp4_act_headroom"):
        assert ours == []
    else:
        ((loc, _, msg),) = ours
        assert loc == ()
        assert f"Algorithm '{method}' mutates layer weights in-place" in msg


@pytest.mark.parametrize("method", list(ALGORITHMS), ids=str)
def test_checkpoint_dir_needs_layerwise(method: str | None):
    cls = ALGORITHMS[method]
    bad = {"layerwise": {"checkpoint_dir": "/tmp/ckpt"}}
    ((loc, _, msg),) = errors(cls, bad)
    assert loc == () and "layerwise.checkpoint_dir requires layerwise.enable=True" in msg
    assert errors(getattr(mc, cls.__name__), bad) == [(loc, "value_error", msg)]
    assert errors(cls, {"layerwise": {"checkpoint_dir": "/tmp/ckpt", "enable": True}}) == []


@pytest.mark.parametrize(
    ("layerwise", "qdq"),
    [
        (None, True),
        ({}, True),
        ({"enable": True}, True),
        ({"get_qdq_activations_from_prev_layer": False}, False),
        ({"get_qdq_activations_from_prev_layer": True}, True),
        ("instance default", True),
        ("instance explicit False", False),
    ],
    ids=repr,
)
def test_gptq_layerwise_default(layerwise: Any, qdq: bool):
    def build(m: Any) -> Any:
        value = layerwise
        if layerwise == "instance default":
            value = m.LayerwiseConfig(enable=True)
        elif layerwise == "instance explicit False":
            value = m.LayerwiseConfig(get_qdq_activations_from_prev_layer=False)
        return m.GPTQCalibConfig(layerwise=value)

    assert build(qc).layerwise.get_qdq_activations_from_prev_layer is qdq
    both(lambda m: (build(m).model_dump(), build(m).model_dump(exclude_unset=True)))
    # only GPTQ changes the default
    assert qc.MaxCalibConfig().layerwise.get_qdq_activations_from_prev_layer is False


@pytest.mark.parametrize(
    "shared_states",
    [
        None,
        {"weight_global_amax": {"patterns": [r"model\.layers\.\d+\.mlp\.experts\.\d+"]}},
        {"weight_global_amax": {"patterns": []}},
        {"weight_global_amax": {}},
        {"bogus": {"patterns": []}, "other": {}},
        {"weight_global_amax": {"patterns": [], "mode": "x"}},
        {"weight_global_amax": {"patterns": ["ok", "(unclosed"]}},
        {"weight_global_amax": ["x"]},
    ],
    ids=repr,
)
@pytest.mark.parametrize("method", ["max", "mse", "local_hessian"])
def test_shared_states(method: str, shared_states: Any):
    cls = ALGORITHMS[method]
    ours = errors(cls, {"shared_states": shared_states})
    assert ours == errors(getattr(mc, cls.__name__), {"shared_states": shared_states})
    if ours:
        assert ours[0][0][0] == "shared_states"
    assert "shared_states" not in qc.GPTQCalibConfig.model_fields


def test_shared_states_messages():
    def message(shared_states: dict) -> str:
        ((_, _, msg),) = errors(qc.MaxCalibConfig, {"shared_states": shared_states})
        return msg

    assert "shared_states has unsupported state(s) ['a', 'b']; expected keys from " in message(
        {"b": {}, "a": {}}
    )
    assert "shared_states['weight_global_amax'] has unsupported field(s) ['x']" in message(
        {"weight_global_amax": {"x": []}}
    )
    assert "has an invalid regex '('" in message({"weight_global_amax": {"patterns": ["("]}})


def test_nvfp4_act_headroom_sparse_dump():
    def dump(m: Any, **kw: Any) -> Any:
        return m.NVFP4ActHeadroomCalibConfig(**kw).model_dump()["weight_scale_algorithm"]

    assert dump(qc) == {"method": "max"}
    sweep = {"weight_scale_algorithm": {"method": "mse", "fp8_scale_sweep": True}}
    assert dump(qc, **sweep) == {"method": "mse", "fp8_scale_sweep": True}
    both(lambda m: dump(m, **sweep))
    both(lambda m: dump(m, weight_scale_algorithm=m.LocalHessianCalibConfig(block_size=32)))
    assert isinstance(
        qc.NVFP4ActHeadroomCalibConfig(**sweep).weight_scale_algorithm, qc.MseCalibConfig
    )
    # without `method`, pydantic's smart union picks the class whose fields fit
    assert dump(qc, weight_scale_algorithm={}) == {"method": "max"}
    assert dump(qc, weight_scale_algorithm={"step_size": 0.5}) == {
        "method": "mse",
        "step_size": 0.5,
    }
    both(lambda m: dump(m, weight_scale_algorithm={"step_size": 0.5}))
    for bad in ({"method": "gptq"}, {"method": "max", "x": 1}, "max", None):
        assert errors(qc.NVFP4ActHeadroomCalibConfig, {"weight_scale_algorithm": bad})
        assert errors(mc.NVFP4ActHeadroomCalibConfig, {"weight_scale_algorithm": bad})
    for field, value in (("rho", 28672.0), ("anchor_percentile", 0), ("upper_percentile", 100.5)):
        assert errors(qc.NVFP4ActHeadroomCalibConfig, {field: value})[0][0] == (field,)


@pytest.mark.parametrize(
    ("learnable", "tied_ok"),
    [
        (["pre", "post"], True),
        ([], True),
        (["post", "pre"], True),
        (["post"], False),
        ("pre", False),
    ],
    ids=repr,
)
def test_lsq_tied_amax(learnable: Any, tied_ok: bool):
    raw = {"learnable_amax": learnable, "tied_amax": True}
    ours = errors(qc.LSQConfig, raw)
    assert ours == errors(mc.LSQConfig, raw)
    assert (ours == []) is tied_ok
    if not tied_ok:
        assert "tied_amax=True requires learnable_amax to be [] or ['pre', 'post']" in ours[0][2]
    assert errors(qc.LSQConfig, {"learnable_amax": learnable}) == []


def test_lsq_scale_algorithm_sparse_dump():
    assert qc.LSQConfig().model_dump()["scale_algorithm"] is None
    raw = {"scale_algorithm": {"method": "mse", "step_size": 0.5}}
    assert qc.LSQConfig(**raw).model_dump()["scale_algorithm"] == {
        "method": "mse",
        "step_size": 0.5,
    }
    both(lambda m: m.LSQConfig(**copy.deepcopy(raw)).model_dump())


@pytest.mark.parametrize(
    ("cls_name", "raw"),
    [
        ("LayerwiseConfig", {"save_every": 0}),
        ("LayerwiseConfig", {"bogus": 1}),
        ("MaxCalibConfig", {"layerwise": True}),
        ("MaxCalibConfig", {"method": "mse"}),
        ("MaxCalibConfig", {"moe_calib_experts_ratio": 0}),
        ("MaxCalibConfig", {"moe_calib_experts_ratio": 1.5}),
        ("MseCalibConfig", {"step_size": 0}),
        ("LocalHessianCalibConfig", {"block_size": 0}),
        ("SmoothQuantCalibConfig", {"alpha": 1.5}),
        ("AWQLiteCalibConfig", {"alpha_step": 0}),
        ("AWQClipCalibConfig", {"min_clip_ratio": 1.0}),
        ("AWQClipCalibConfig", {"shrink_step": 1.5}),
        ("AWQFullCalibConfig", {"alpha_step": 2, "min_clip_ratio": 0}),
        ("SVDQuantConfig", {"skip_layers": "x"}),
        ("GPTQCalibConfig", {"perc_damp": 0}),
        ("QuantizeAlgorithmConfig", {"method": "max"}),
    ],
    ids=repr,
)
def test_algorithm_field_constraints(cls_name: str, raw: dict):
    ours = errors(getattr(qc, cls_name), raw)
    assert ours
    assert [e[:2] for e in ours] == [e[:2] for e in errors(getattr(mc, cls_name), raw)]


def test_algorithm_configs_accept_none_layerwise_and_keep_dump_order():
    assert qc.MaxCalibConfig(layerwise=None).layerwise == qc.LayerwiseConfig()
    both(lambda m: list(m.AWQFullCalibConfig().model_dump()))
    both(lambda m: m.SVDQuantConfig(skip_layers=["*.attn.add_q_proj"], lowrank=None).model_dump())


# ---------------------------------------------------------------------------------------------
# 'QuantizeConfig': CompressConfig, QuantizeConfig and resolve_algorithms
# ---------------------------------------------------------------------------------------------


def test_compress_config():
    both(lambda m: m.CompressConfig(compress={"*lm_head*": False}, quant_gemm=False).model_dump())
    both(lambda m: m.CompressConfig(compress={"*": "maybe"}))


def test_quantize_config_default():
    cfg = qc.QuantizeConfig()
    assert cfg.algorithm == "max"
    (entry,) = cfg.quant_cfg
    assert entry.model_dump(exclude_unset=True) == {
        "quantizer_name": "*",
        "cfg": {"num_bits": 8, "axis": None},
    }
    both(lambda m: m.QuantizeConfig().model_dump())


@pytest.mark.parametrize(
    "quant_cfg",
    [None, "*", 5, b"x"],
    ids=repr,
)
def test_quantize_config_quant_cfg_shape(quant_cfg: Any):
    ((loc, kind, msg),) = errors(qc.QuantizeConfig, {"quant_cfg": quant_cfg})
    assert (loc, kind) == (("quant_cfg",), "value_error")
    assert "quant_cfg must be a sequence of entries (or a legacy flat mapping), got" in msg
    assert errors(mc.QuantizeConfig, {"quant_cfg": quant_cfg})[0][:2] == (loc, kind)


def test_quantize_config_entry_errors_name_index_and_field():
    raw = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*w*", "cfg": {"num_bits": 4, "block_sizes": {-1: (4, 3)}}},
        ]
    }
    ((loc, _, msg),) = errors(qc.QuantizeConfig, raw)
    assert loc[:3] == ("quant_cfg", 1, "cfg") and loc[-1] == "block_sizes"
    assert "block_sizes[-1] must be an int block size" in msg
    ((loc, _, _),) = errors(qc.QuantizeConfig, {"quant_cfg": [{"quantizer_name": "*", "x": 1}]})
    assert loc == ("quant_cfg", 0, "x")
    ((loc, _, msg),) = errors(qc.QuantizeConfig, {"quant_cfg": [{"*": {}}, [{"*": {}}]]})
    assert loc == ("quant_cfg",) and "Invalid quant_cfg entry at quant_cfg[1]" in msg


@pytest.mark.parametrize(
    ("algorithm", "methods"),
    [
        (None, []),
        ("max", ["max"]),
        ([None, "max", {"method": "gptq"}], ["max", "gptq"]),
        ({"method": None}, [None]),
        ([], []),
    ],
    ids=repr,
)
def test_resolve_algorithms(algorithm: Any, methods: list):
    resolved = resolve_algorithms(algorithm)
    assert [a.method for a in resolved] == methods
    assert all(isinstance(a, qc.QuantizeAlgorithmConfig) for a in resolved)
    assert qc.QuantizeConfig(algorithm=algorithm).algorithms() == resolved


def test_resolve_algorithms_validates_dicts():
    (gptq,) = resolve_algorithms({"method": "gptq", "perc_damp": 0.5})
    assert isinstance(gptq, qc.GPTQCalibConfig) and gptq.perc_damp == 0.5
    instance = qc.MseCalibConfig()
    assert resolve_algorithms([instance]) == (instance,)
    with pytest.raises(ValueError, match="needs a 'method' key"):
        resolve_algorithms({"alpha": 0.5})
    with pytest.raises(ValueError, match=r"invalid 'gptq' algorithm config: perc_damp: "):
        resolve_algorithms({"method": "gptq", "perc_damp": 0})


def test_algorithm_assignment_is_validated():
    cfg = qc.QuantizeConfig()
    cfg["algorithm"] = {"method": "awq_lite", "alpha_step": 0.2}
    assert cfg.algorithm == {"method": "awq_lite", "alpha_step": 0.2}  # kept as given
    with pytest.raises(ValidationError, match="Unknown calibration algorithm 'awq'"):
        cfg["algorithm"] = "awq"


# ---------------------------------------------------------------------------------------------
# 'need_calibration'
# ---------------------------------------------------------------------------------------------

NVFP4 = {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}}
DISABLE = {"quantizer_name": "*", "enable": False}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (mc.NVFP4_DEFAULT_CFG, True),
        (mc.MXFP8_DEFAULT_CFG, True),  # block_sizes.type == "dynamic" does not count
        (mc.W4A16_NVFP4_CFG, False),
        (mc.INT8_WEIGHT_ONLY_CFG, False),
        (mc.INT8_SMOOTHQUANT_CFG, True),
        (mc.FP8_KV_CFG, KeyError),
        ({"algorithm": {"method": "max"}, "quant_cfg": []}, True),
        ({"algorithm": ["max"], "quant_cfg": []}, True),
        ({"algorithm": "max", "quant_cfg": []}, False),
        ({"algorithm": None}, False),
        ({"algorithm": "max", "quant_cfg": None}, False),
        (
            {
                "algorithm": "max",
                "quant_cfg": [DISABLE, {"quantizer_name": "*input_quantizer", "cfg": NVFP4}],
            },
            True,
        ),
        (
            {
                "algorithm": "max",
                "quant_cfg": [{"quantizer_name": "*input_quantizer", "cfg": {"type": "dynamic"}}],
            },
            False,
        ),
        (
            {
                "algorithm": "max",
                "quant_cfg": [
                    {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": 8}, "enable": False}
                ],
            },
            False,
        ),
        # "weight_quantizer" as a substring skips the entry, even for an activation pattern
        (
            {
                "algorithm": "max",
                "quant_cfg": [{"quantizer_name": "*weight_quantizer*", "enable": True}],
            },
            False,
        ),
        ({"algorithm": "max", "quant_cfg": [{"quantizer_name": "*", "enable": True}]}, True),
        # list cfg: each element's own enable counts, the entry's enable does not
        (
            {
                "algorithm": "max",
                "quant_cfg": [
                    {"quantizer_name": "*in*", "cfg": [{"num_bits": 4}], "enable": False}
                ],
            },
            True,
        ),
        (
            {
                "algorithm": "max",
                "quant_cfg": [
                    {
                        "quantizer_name": "*in*",
                        "cfg": [
                            {"num_bits": 4, "enable": False},
                            {"num_bits": 8, "type": "dynamic"},
                        ],
                    }
                ],
            },
            False,
        ),
        ({"algorithm": "max", "quant_cfg": {"*input_quantizer": {"num_bits": 8}}}, True),
    ],
    ids=repr,
)
def test_need_calibration(config: Mapping, expected: Any):
    result = both(lambda m: m.need_calibration(copy.deepcopy(config)))
    if expected is KeyError:
        assert result == ("raises", "KeyError")
    else:
        assert result == ("ok", ("bool", expected))


def test_need_calibration_on_config_objects():
    cfg = qc.QuantizeConfig(algorithm=None, quant_cfg=[DISABLE])
    assert qc.need_calibration(cfg) is False
    cfg["algorithm"] = "mse"
    assert qc.need_calibration(cfg) is True
    both(lambda m: m.need_calibration(m.QuantizeConfig(**copy.deepcopy(mc.W4A16_NVFP4_CFG))))

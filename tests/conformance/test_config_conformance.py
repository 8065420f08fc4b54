"""qconfig's config language against nvidia-modelopt 0.47.0.

The rules are those of docs/model-optimizer-rules.md, from 'Config objects' to 'QuantizeConfig'.

Every input here is given to both implementations; they must agree on accept/reject, on the
normalized entries (``model_dump(exclude_unset=True)``), on the full ``QuantizeConfig`` dump and
on the number of ``DeprecationWarning``s. The one allowed difference is qconfig's stricter,
config-time ``algorithm`` check (docs/differences.md, row 1): where Model Optimizer accepts an
algorithm that its own calibration step would later refuse, qconfig rejects it up front; and
attribute values Model Optimizer accepts and then crashes or computes NaN with at the first
forward (``DELIBERATE_REJECTIONS``, docs/differences.md), which qconfig rejects up front too.

Every qconfig rejection must also be a ``ValueError`` (pydantic's ``ValidationError`` is one),
never a bare ``AssertionError``/``KeyError``/``TypeError``, never an empty "Assertion failed, "
message, and it must say where: the entry index and field (or the ``quant_cfg`` element).
"""

import copy
import math
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import modelopt.torch.quantization.config as mc
import pytest
import qconfig as qc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelopt.torch.quantization.mode import CalibrateModeRegistry, get_modelike_from_algo_cfg
from pydantic import ValidationError
from qconfig.algorithms import ALGORITHMS, known_methods

# ---------------------------------------------------------------------------------------------
# Running both sides
# ---------------------------------------------------------------------------------------------


def canon(value: Any) -> Any:
    """A comparable form that also tells ``1`` from ``True`` from ``1.0``, tuples from lists,
    keeps dict order and compares NaN equal to NaN."""
    if isinstance(value, dict):
        return ("dict", tuple((canon(k), canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canon(v) for v in value))
    if isinstance(value, float):
        return ("float", "nan" if math.isnan(value) else repr(value))
    if value is None or isinstance(value, (bool, int, str)):
        return (type(value).__name__, value)
    return ("object", repr(value))


class Outcome:
    """What one implementation did with one input."""

    def __init__(self, fn: Callable[[Any], Any], raw: Any, dump: Callable[[Any], Any]):
        self.error: BaseException | None = None
        self.result: Any = None
        self.dump: Any = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                self.result = fn(copy.deepcopy(raw))
                self.dump = canon(dump(self.result))
            except Exception as exc:
                self.error = exc
        self.deprecations = sum(issubclass(w.category, DeprecationWarning) for w in caught)

    @property
    def ok(self) -> bool:
        return self.error is None


def _entries_dump(entries: list) -> list:
    return [entry.model_dump(exclude_unset=True) for entry in entries]


def _model_dump(model: Any) -> Any:
    return model.model_dump()


def _sparse_dump(model: Any) -> Any:
    return model.model_dump(exclude_unset=True)


def _quantize_dump(model: Any) -> Any:
    return (model.model_dump(), model.model_dump(exclude_unset=True))


# ---------------------------------------------------------------------------------------------
# What qconfig's rejections must look like
# ---------------------------------------------------------------------------------------------

ENTRY_FIELDS = ("quantizer_name", "parent_class", "cfg", "enable")


def _assert_entry_loc(err: dict, loc: tuple) -> None:
    """An error inside the normalized entry list: ``[index, field, ...]``, or one of the
    entry's own validators, whose messages quote the field they are about."""
    assert loc and isinstance(loc[0], int), err
    if len(loc) >= 2:
        assert isinstance(loc[1], str), err  # a field name (or the unknown key)
    else:
        assert any(f"'{name}'" in err["msg"] for name in ENTRY_FIELDS), err


def assert_good_rejection(exc: BaseException | None, *, where: str) -> None:
    """``where``: ``"quantize"`` (QuantizeConfig), ``"list"`` (normalize_quant_cfg_list),
    ``"entry"`` (QuantizerCfgEntry) or ``"model"`` (any other config class)."""
    assert exc is not None
    assert isinstance(exc, ValueError), f"{type(exc).__name__} escaped: {exc!r}"
    text = str(exc)
    assert "Assertion failed, \n" not in text and not text.rstrip().endswith("Assertion failed,")
    if not isinstance(exc, ValidationError):
        # a shape error raised outside pydantic (normalize_quant_cfg_list): says where
        assert where == "list" and "quant_cfg" in text, text
        return
    for err in exc.errors():
        assert err["type"] != "assertion_error", err
        assert err["msg"].strip() not in ("", "Assertion failed,", "Value error,"), err
        loc = err["loc"]
        if where == "list":
            _assert_entry_loc(err, loc)
        elif where == "entry":
            _assert_entry_loc(err, (0, *loc))
        elif where == "quantize" and loc[:1] == ("quant_cfg",):
            if len(loc) == 1:  # raised while expanding the raw input: the message says where
                assert "quant_cfg" in err["msg"], err
            else:
                _assert_entry_loc(err, loc[1:])


# ---------------------------------------------------------------------------------------------
# The algorithm rule qconfig adds, stated with Model Optimizer's own runtime as the oracle
# ---------------------------------------------------------------------------------------------

#: methods with a registered ``<method>_calibrate`` mode in Model Optimizer
MODELOPT_METHODS = sorted(
    name.removesuffix("_calibrate")
    for name in CalibrateModeRegistry._name2descriptor
    if name != "_no_calibrate"
)


#: What qconfig's messages say when it rejects an attribute value Model Optimizer accepts and
#: then cannot run (integer num_bits off the float32 grid, format names without a backend,
#: non-finite constant_amax, block sizes < 1, unknown block types or scale formats, calibrator
#: tuples that cannot be called, rotation blocks that are not powers of 2).
DELIBERATE_REJECTIONS = (
    "makes no working",
    "num_bits must be a positive integer",
    "is not a number format",
    "constant_amax must be a finite float32",
    "positive block size",
    "block_sizes['",
    "(class, args, kwargs) tuple",
    "power of 2",
    "finite number",  # algorithm options: an infinite search range never ends
)


def deliberately_stricter(error: BaseException | None) -> bool:
    """Is every reason qconfig gives one of the deliberate rejections?"""
    if isinstance(error, ValidationError):
        messages = [err["msg"] for err in error.errors()]
    else:
        messages = [str(error)] if error is not None else []
    return bool(messages) and all(
        any(marker in message for marker in DELIBERATE_REJECTIONS) for message in messages
    )


def modelopt_calibration_accepts(algorithm: Any) -> bool:
    """Would Model Optimizer's calibration step (mode lookup + mode config) accept this?

    That is what ``mtq.calibrate`` does after conversion: ``get_modelike_from_algo_cfg`` and
    then ``config_class(**config)``. The one exception is the empty string: Model Optimizer
    maps any falsy name to ``_no_calibrate``; qconfig only accepts a known name or null.
    """
    forms = algorithm if isinstance(algorithm, list) else [algorithm]
    if any(isinstance(f, str) and f not in MODELOPT_METHODS for f in forms):
        return False
    try:
        for mode, config in get_modelike_from_algo_cfg(copy.deepcopy(algorithm)):
            CalibrateModeRegistry[mode].config_class(**config)
    except Exception:
        return False
    return True


def check_quantize_config(raw: dict) -> str:
    """Compare ``QuantizeConfig(**raw)``; returns which kind of case it was."""
    mo = Outcome(lambda r: mc.QuantizeConfig(**r), raw, _quantize_dump)
    ours = Outcome(lambda r: qc.QuantizeConfig(**r), raw, _quantize_dump)
    if not mo.ok:
        assert not ours.ok, f"Model Optimizer rejects ({mo.error!r}), qconfig accepts {raw!r}"
        assert_good_rejection(ours.error, where="quantize")
        return "rejected"
    if not modelopt_calibration_accepts(mo.result.algorithm):
        # the deliberate difference: rejected at config time, with the error on `algorithm`
        assert not ours.ok, f"qconfig accepts an algorithm calibration refuses: {raw!r}"
        assert isinstance(ours.error, ValidationError), repr(ours.error)
        assert {err["loc"][0] for err in ours.error.errors()} == {"algorithm"}, ours.error
        assert_good_rejection(ours.error, where="quantize")
        return "stricter"
    if not ours.ok and deliberately_stricter(ours.error):
        assert_good_rejection(ours.error, where="quantize")
        return "stricter"
    assert ours.ok, f"Model Optimizer accepts, qconfig rejects {raw!r}: {ours.error}"
    assert ours.dump == mo.dump, raw
    assert ours.deprecations == mo.deprecations, raw
    return "accepted"


def check_quant_cfg(raw: Any, algorithm: Any = "max") -> str:
    """Compare ``normalize_quant_cfg_list``, ``QuantizeConfig(quant_cfg=...)`` and
    ``need_calibration`` on one raw ``quant_cfg``."""
    mo = Outcome(mc.normalize_quant_cfg_list, raw, _entries_dump)
    ours = Outcome(qc.normalize_quant_cfg_list, raw, _entries_dump)
    if not mo.ok:
        assert not ours.ok, f"Model Optimizer rejects ({mo.error!r}), qconfig accepts {raw!r}"
        assert_good_rejection(ours.error, where="list")
        ours_cfg = Outcome(lambda r: qc.QuantizeConfig(quant_cfg=r), raw, _quantize_dump)
        assert not ours_cfg.ok
        assert_good_rejection(ours_cfg.error, where="quantize")
        return "rejected"
    if not ours.ok and deliberately_stricter(ours.error):
        assert_good_rejection(ours.error, where="list")
        return "stricter"
    assert ours.ok, f"Model Optimizer accepts, qconfig rejects {raw!r}: {ours.error}"
    assert ours.dump == mo.dump, raw
    assert ours.deprecations == mo.deprecations, raw
    assert check_quantize_config({"quant_cfg": raw, "algorithm": algorithm}) in (
        "accepted",
        "stricter",
    )
    config = {"quant_cfg": raw, "algorithm": algorithm}
    mo_need = Outcome(mc.need_calibration, config, lambda x: x)
    ours_need = Outcome(qc.need_calibration, config, lambda x: x)
    assert (ours_need.ok, ours_need.dump) == (mo_need.ok, mo_need.dump), raw
    return "accepted"


def check_model(mo_cls: type, qc_cls: type, raw: dict) -> str:
    """Compare one config class on one raw mapping (full and sparse dumps)."""
    mo = Outcome(lambda r: mo_cls(**r), raw, lambda m: (_model_dump(m), _sparse_dump(m)))
    ours = Outcome(lambda r: qc_cls(**r), raw, lambda m: (_model_dump(m), _sparse_dump(m)))
    if not mo.ok:
        assert not ours.ok, f"Model Optimizer rejects ({mo.error!r}), qconfig accepts {raw!r}"
        assert_good_rejection(
            ours.error, where="entry" if qc_cls is qc.QuantizerCfgEntry else "model"
        )
        return "rejected"
    if not ours.ok and deliberately_stricter(ours.error):
        assert_good_rejection(
            ours.error, where="entry" if qc_cls is qc.QuantizerCfgEntry else "model"
        )
        return "stricter"
    assert ours.ok, f"Model Optimizer accepts, qconfig rejects {raw!r}: {ours.error}"
    assert ours.dump == mo.dump, raw
    return "accepted"


# ---------------------------------------------------------------------------------------------
# Presets (39)
# ---------------------------------------------------------------------------------------------


def test_modelopt_lists_39_presets():
    assert len(mc.choices) == 39


@pytest.mark.parametrize("name", sorted(mc.choices))
def test_preset(name: str):
    preset = getattr(mc, name)
    assert check_quantize_config(dict(preset)) == "accepted"
    assert check_quant_cfg(preset["quant_cfg"], preset.get("algorithm", "max")) == "accepted"
    # need_calibration on the preset itself: KV presets have no `algorithm` → KeyError in both
    mo = Outcome(mc.need_calibration, preset, lambda x: x)
    ours = Outcome(qc.need_calibration, preset, lambda x: x)
    assert (ours.ok, ours.dump) == (mo.ok, mo.dump)
    assert type(ours.error) is type(mo.error)


# ---------------------------------------------------------------------------------------------
# attribute validators V1-V9 and RotateConfig (docs/model-optimizer-rules.md, 'Attribute
# validation')
# ---------------------------------------------------------------------------------------------

NAN = float("nan")
DYN16 = {-1: 16, "type": "dynamic"}

# (raw attributes, does Model Optimizer accept it, or "stricter": it accepts, qconfig rejects on
# purpose) — the verdict is stated so a table row that both sides got wrong the same way still
# fails.
ATTRIBUTE_EXAMPLES = [
    # V1: a lone {"enable": True}, at any depth except under `rotate`
    ({"enable": True}, False),
    ({"enable": False}, True),
    ({"num_bits": 4, "bias": {"enable": True}}, False),
    ({"backend_extra_args": {"enable": True}}, False),
    ({"backend_extra_args": {"enable": True, "x": 1}}, True),
    ({"backend_extra_args": {"nested": [{"enable": True}]}}, False),
    ({"rotate": {"enable": True}}, True),
    ({"enable": 1}, True),
    # V2: num_bits
    ({"num_bits": 0}, False),
    ({"num_bits": -3}, False),
    ({"num_bits": True}, "stricter"),  # 1 signed bit: quantized max 0, NaN
    ({"num_bits": 4.0}, True),
    ({"num_bits": 4.5}, False),
    ({"num_bits": [4, 3]}, True),
    ({"num_bits": "e4m3"}, "stricter"),  # a format name without a backend
    ({"num_bits": "nvfp4"}, "stricter"),
    ({"num_bits": (4, 3)}, True),
    ({"num_bits": (2, 1)}, True),
    ({"num_bits": (5, 2)}, False),
    ({"num_bits": (5, 2), "block_sizes": DYN16}, True),
    ({"num_bits": (3, 2), "block_sizes": DYN16}, True),
    ({"num_bits": (2, 3), "block_sizes": DYN16}, True),
    ({"num_bits": (1, 2), "block_sizes": DYN16}, True),
    ({"num_bits": (3, 2), "block_sizes": {-1: 32, "type": "static"}}, False),
    ({"num_bits": (0, 3), "block_sizes": DYN16}, False),
    ({"num_bits": (3, 0), "block_sizes": DYN16}, False),
    ({"num_bits": (1, 1)}, False),
    ({"num_bits": (4, 3, 1)}, False),
    ({"num_bits": 0, "backend": "custom"}, True),
    ({"num_bits": (5, 2), "backend": "custom"}, True),
    # V3: effective_bits
    ({"effective_bits": 4.5}, True),
    ({"effective_bits": 16}, True),
    ({"effective_bits": 0}, False),
    ({"effective_bits": 16.5}, False),
    ({"effective_bits": NAN}, False),
    # V4: learn_amax
    ({"learn_amax": True}, False),
    ({"learn_amax": False}, True),
    # V5: block_sizes
    ({"axis": 0, "block_sizes": {-1: 128}}, False),
    ({"axis": None, "block_sizes": {-1: 128}}, True),
    ({"block_sizes": {"type": "dynamic"}}, False),
    ({"block_sizes": {-1: 16, -2: 16, "type": "dynamic"}}, False),
    ({"block_sizes": {-1: None, "type": "dynamic"}}, True),
    ({"block_sizes": {-1: 128, -2: 128}}, True),
    ({"block_sizes": {-1: 16, "bogus": 1}}, False),
    ({"block_sizes": {-1: (4, 3)}}, False),
    ({"block_sizes": {-1: 16, "type": "bogus"}}, "stricter"),  # silently static
    ({"block_sizes": {}}, True),
    ({"block_sizes": {"-1": 16}}, False),
    (
        {"block_sizes": {-1: 16, "type": "static", "scale_bits": (4, 3), "four_over_six": True}},
        True,
    ),
    ({"block_sizes": {-1: 16, "scale_block_sizes": {-1: 16}}}, True),
    # V6: bias
    ({"bias": {-1: None}}, True),
    ({"bias": {-2: None, -4: None, "type": "static"}}, True),
    ({"bias": {-1: None, "method": "max_min", "type": "dynamic"}}, True),
    ({"bias": {"type": "static"}}, False),
    ({"bias": {-1: None, "type": "bogus"}}, False),
    ({"bias": {-1: None, "method": "median"}}, False),
    ({"bias": {"axis": (-1,)}}, False),
    ({"bias": {}}, False),
    # V7: calibrator
    ({"calibrator": "max"}, True),
    ({"calibrator": "histogram"}, True),
    ({"calibrator": "minmax"}, False),
    ({"calibrator": ("my.Calibrator", (), {})}, "stricter"),  # TypeError when built
    # V8 / V9: constant amax
    ({"constant_amax": 2688.0}, True),
    ({"constant_amax": 0}, False),
    ({"constant_amax": -1.0}, False),
    ({"constant_amax": NAN}, False),
    ({"use_constant_amax": True}, True),
    ({"use_constant_amax": True, "constant_amax": 1.0}, False),
    # patterns and unknown keys
    ({"type": "dynamic"}, True),
    ({"type": "Dynamic"}, False),
    ({"trt_high_precision_dtype": "Half"}, True),
    ({"trt_high_precision_dtype": "float"}, False),
    ({"num_bit": 8}, False),
    # RotateConfig inside an attribute config
    ({"rotate": True}, True),
    ({"rotate": {"enable": True, "mode": "rotate_back", "block_size": 16}}, True),
    ({"rotate": {"mode": "bogus"}}, False),
    ({"rotate": {"block_size": 0}}, False),
    ({"rotate": {"block_size": True}}, False),
    ({"rotate": {"block_size": "16"}}, False),
    ({"rotate": {"block_size": 1.5}}, False),
    ({"rotate": {"bogus": 1}}, False),
]


@pytest.mark.parametrize(("raw", "accepted"), ATTRIBUTE_EXAMPLES, ids=repr)
def test_attribute_example(raw: dict, accepted: bool | str):
    expected = accepted if isinstance(accepted, str) else "accepted" if accepted else "rejected"
    assert check_model(mc.QuantizerAttributeConfig, qc.QuantizerAttributeConfig, raw) == expected
    # the same attributes as an entry's cfg, in the list and the legacy form
    entry = {"quantizer_name": "*weight_quantizer", "cfg": raw}
    assert check_quant_cfg([entry]) == expected
    assert check_quant_cfg([{"*weight_quantizer": raw}]) in ("accepted", "rejected", "stricter")


# ---------------------------------------------------------------------------------------------
# QuantizerCfgEntry (docs/model-optimizer-rules.md, 'Entries of quant_cfg')
# ---------------------------------------------------------------------------------------------

ENTRY_EXAMPLES = [
    ({"quantizer_name": "*", "cfg": {}}, False),
    ({"quantizer_name": "*", "cfg": {}, "enable": False}, True),
    ({"quantizer_name": "*", "cfg": [], "enable": False}, True),
    ({"quantizer_name": "*", "cfg": [{}, {}], "enable": False}, True),
    ({"quantizer_name": "*", "cfg": {}, "enable": 0}, False),
    ({"quantizer_name": "*", "cfg": {}, "enable": True}, False),
    ({"quantizer_name": "*", "cfg": [{}]}, False),
    ({"quantizer_name": "*", "cfg": [{}, {"num_bits": 4}]}, True),
    ({"quantizer_name": "*", "cfg": ()}, True),
    ({"quantizer_name": "*", "cfg": ({},)}, True),  # a tuple is never "empty": all defaults
    ({"quantizer_name": "*"}, False),
    ({"quantizer_name": "*", "parent_class": "nn.Linear"}, False),
    ({"quantizer_name": "*", "cfg": None}, True),
    ({"quantizer_name": "*", "enable": "false"}, True),
    ({"quantizer_name": "*", "enable": 0}, True),
    ({"quantizer_name": "*", "enable": None}, False),
    ({"quantizer_name": "*", "enable": "maybe"}, False),
    ({"quantizer_name": "*", "parent_class": "anything at all", "enable": True}, True),
    ({"quantizer_name": "*", "parent_class": 5, "enable": True}, False),
    ({"quantizer_name": 5, "enable": True}, False),
    ({"cfg": {"num_bits": 8}}, False),
    ({"quantizer_name": "*", "cfg": {"enable": False, "num_bits": 4}}, True),
    ({"quantizer_name": "*", "cfg": {"enable": True}}, False),
    ({"quantizer_name": "*", "cfg": [{"enable": True}, {"num_bits": 4}]}, False),
    ({"quantizer_name": "*", "cfg": "int8"}, False),
    ({"quantizer_name": "*", "cfg": 8}, False),
    ({"quantizer_name": "*", "enable": True, "bogus": 1}, False),
    (
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": [
                {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "enable": True},
                {"num_bits": (4, 3), "axis": None},
            ],
        },
        True,
    ),
]


@pytest.mark.parametrize(("raw", "accepted"), ENTRY_EXAMPLES, ids=repr)
def test_entry_example(raw: dict, accepted: bool):
    expected = "accepted" if accepted else "rejected"
    assert check_model(mc.QuantizerCfgEntry, qc.QuantizerCfgEntry, raw) == expected
    if "quantizer_name" in raw:
        assert check_quant_cfg([raw]) == expected
    else:  # a one-key list element is a legacy {pattern: cfg} pair: here pattern "cfg"
        assert check_quant_cfg([raw]) == "accepted"


# ---------------------------------------------------------------------------------------------
# normalization examples: input, accepted, DeprecationWarnings, entries
# (docs/model-optimizer-rules.md, 'Normalizing quant_cfg')
# ---------------------------------------------------------------------------------------------

W8 = {"num_bits": 8, "axis": 0}
NORMALIZE_EXAMPLES = [
    (
        [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": W8},
        ],
        True,
        0,
        2,
    ),
    (
        {
            "default": {"num_bits": 8, "axis": None},
            "*": {"enable": False},
            "*weight_quantizer": W8,
            "nn.Conv2d": {
                "*input_quantizer": {"enable": False},
                "*weight_quantizer": {"num_bits": 4, "axis": 0},
            },
            "*lm_head*": {"enable": False},
        },
        True,
        2,
        6,
    ),
    (
        {
            "*weight_quantizer": {"num_bits": 4, "axis": 0},
            "*input_quantizer": {"num_bits": 8, "axis": None},
            "default": {"enable": False},
        },
        True,
        2,
        3,
    ),
    ([{"*": {"enable": False}}, {"*weight_quantizer": W8}], True, 1, 2),
    (
        [
            {
                "*weight_quantizer": [
                    {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}, "enable": True},
                    {"num_bits": (4, 3), "axis": None},
                ]
            }
        ],
        True,
        1,
        1,
    ),
    ([{"*": {"enable": True}}], True, 1, 1),
    ([{"*": {}}], True, 1, 1),
    ([{"*": None}], True, 1, 1),
    ([{"*": {"enable": False, "num_bits": 4}}], True, 1, 1),
    ([{"nn.Linear": {"*": {}}}], True, 1, 1),
    ([{"*": {"enable": False}, "*weight_quantizer": {"num_bits": 8}}], False, None, None),
    (
        [{"*": {"enable": False}, "nn.Linear": {"*weight_quantizer": {"num_bits": 8}}}],
        True,
        1,
        2,
    ),
    (
        [{"quantizer_name": "*", "enable": False}, {"*weight_quantizer": {"num_bits": 8}}],
        True,
        1,
        2,
    ),
    ({"quantizer_name": "*", "enable": False}, False, None, None),
    ([], True, 0, 0),
    ({}, True, 1, 0),
    ((), True, 0, 0),
    ([[{"*": {"enable": False}}]], False, None, None),
    ([{"nn.Linear": 8}], False, None, None),
    ([{"nn.Linear": [{"*": {"enable": False}}]}], False, None, None),
    ([{"nn.Linear": {"*": 8}}], False, None, None),
    ([{"nn.Linear": {"*": None}}], False, None, None),
    (None, False, None, None),
    ("*", False, None, None),
    (b"*", False, None, None),
    (8, False, None, None),
    (["*"], False, None, None),
    ([None], False, None, None),
    ([{"*": 8}], False, None, None),
    ([{"*": "int8"}], False, None, None),
    ([{"*": []}], False, None, None),
    ([{"*": [{}]}], False, None, None),
    ([{"*": {"enable": True, "num_bits": 4}}, {"default": {"enable": False}}], True, 1, 2),
]


@pytest.mark.parametrize(
    ("raw", "accepted", "deprecations", "n_entries"), NORMALIZE_EXAMPLES, ids=repr
)
def test_normalize_example(raw: Any, accepted: bool, deprecations: int | None, n_entries):
    assert check_quant_cfg(raw) == ("accepted" if accepted else "rejected")
    if accepted:
        ours = Outcome(qc.normalize_quant_cfg_list, raw, _entries_dump)
        assert ours.deprecations == deprecations
        assert len(ours.result) == n_entries


def test_default_is_renamed_in_place_not_moved_first():
    raw = {"*weight_quantizer": {"num_bits": 4, "axis": 0}, "default": {"enable": False}}
    ours = Outcome(qc.normalize_quant_cfg_list, raw, _entries_dump)
    assert [e.quantizer_name for e in ours.result] == ["*weight_quantizer", "*"]
    assert ours.result[-1].enable is False


@pytest.mark.parametrize(
    "sub_cfg",
    [[{"num_bits": 4, "axis": 0}], [("num_bits", 4)], [], ""],
    ids=repr,
)
def test_scoped_values_must_be_mappings(sub_cfg: Any):
    """Documented difference: Model Optimizer runs ``dict(sub_cfg)`` on an ``nn.*``-scoped
    value, so some sequences slip through as nonsense (``[{"num_bits": 4, "axis": 0}]``
    becomes ``{"num_bits": "axis"}``) or as an enable-only entry (``[]``, ``""``). qconfig
    requires a mapping."""
    raw = [{"nn.Linear": {"*weight_quantizer": sub_cfg}}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (entry,) = mc.normalize_quant_cfg_list(copy.deepcopy(raw))
        assert entry.parent_class == "nn.Linear"
        with pytest.raises(ValueError, match=r"under 'nn.Linear' must be a mapping") as info:
            qc.normalize_quant_cfg_list(copy.deepcopy(raw))
    assert not isinstance(info.value, ValidationError)
    assert str(info.value).startswith("quant_cfg[0]: ")


# ---------------------------------------------------------------------------------------------
# Objects instead of raw mappings (instances of each library's own classes)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        # a validated entry in the list is kept as the same object
        lambda m: {"quant_cfg": [m.QuantizerCfgEntry(quantizer_name="*", enable=False)]},
        lambda m: {
            "quant_cfg": [
                {"quantizer_name": "*", "enable": False},
                m.QuantizerCfgEntry(quantizer_name="*weight_quantizer", cfg={"num_bits": 4}),
            ]
        },
        # an attribute config instance as cfg, in the list and in the legacy form (it is a
        # Mapping, so the legacy form copies all 19 fields)
        lambda m: {
            "quant_cfg": [
                {"quantizer_name": "*", "cfg": m.QuantizerAttributeConfig(num_bits=(4, 3))}
            ]
        },
        lambda m: {"quant_cfg": [{"*": m.QuantizerAttributeConfig(num_bits=4, enable=False)}]},
        lambda m: {"quant_cfg": {"*": m.QuantizerAttributeConfig(num_bits=4)}},
        # algorithm instances keep all their fields in the dump
        lambda m: {"algorithm": m.MaxCalibConfig(distributed_sync=False)},
        lambda m: {"algorithm": [m.GPTQCalibConfig(), "max", None]},
        lambda m: {"algorithm": m.GPTQCalibConfig(layerwise=m.LayerwiseConfig(enable=True))},
        lambda m: {
            "algorithm": m.GPTQCalibConfig(
                layerwise=m.LayerwiseConfig(get_qdq_activations_from_prev_layer=False)
            )
        },
        lambda m: {
            "algorithm": m.NVFP4ActHeadroomCalibConfig(
                weight_scale_algorithm=m.MseCalibConfig(fp8_scale_sweep=True)
            )
        },
        lambda m: {"algorithm": m.LSQConfig(scale_algorithm={"method": "local_hessian"})},
        lambda m: {"algorithm": m.QuantizeAlgorithmConfig()},
    ],
)
def test_instances(build: Callable[[Any], dict]):
    mo = Outcome(lambda _: mc.QuantizeConfig(**build(mc)), None, _quantize_dump)
    ours = Outcome(lambda _: qc.QuantizeConfig(**build(qc)), None, _quantize_dump)
    assert mo.ok and ours.ok, (mo.error, ours.error)
    assert ours.dump == mo.dump
    assert ours.deprecations == mo.deprecations


def test_validated_entry_is_kept_as_is():
    entry = qc.QuantizerCfgEntry(quantizer_name="*", enable=False)
    assert qc.normalize_quant_cfg_list([entry])[0] is entry
    assert qc.QuantizeConfig(quant_cfg=[entry]).quant_cfg[0] is entry


# ---------------------------------------------------------------------------------------------
# The one deliberate difference: `algorithm` is validated at config time
# ---------------------------------------------------------------------------------------------


def test_known_methods_are_modelopts():
    assert sorted(known_methods()) == MODELOPT_METHODS
    for method, cls in ALGORITHMS.items():
        mode = f"{method}_calibrate" if method else "_no_calibrate"
        assert cls.__name__ == CalibrateModeRegistry[mode].config_class.__name__


STRICTER_ALGORITHMS = [
    ("awq", True),
    ("nope", True),
    ("MAX", True),
    ("", True),
    ({"method": "nope", "x": 1}, True),
    ({"method": "awq"}, True),
    ({"alpha": 0.5}, True),
    ({}, True),
    ({"method": "max", "bogus": 1}, True),
    ({"method": "smoothquant", "alpha_step": 0.1}, True),
    ({"method": "awq_lite", "alpha_step": 2}, True),
    ({"method": "gptq", "perc_damp": 0}, True),
    ({"method": "gptq", "layerwise": {"calib_mutates_weights": False}}, True),
    ({"method": "max", "layerwise": {"checkpoint_dir": "/tmp/ckpt"}}, True),
    ({"method": "mse", "shared_states": {"bogus": {"patterns": []}}}, True),
    ({"method": "lsq", "tied_amax": True}, True),
    ({"method": "nvfp4_act_headroom", "weight_scale_algorithm": {"method": "gptq"}}, True),
    (["max", "awq"], True),
    ([{"method": "max"}, {"method": "nope"}], True),
]


@pytest.mark.parametrize(("algorithm", "_"), STRICTER_ALGORITHMS, ids=repr)
def test_stricter_algorithm_check(algorithm: Any, _: bool):
    # Model Optimizer keeps the value as given ...
    accepted = mc.QuantizeConfig(algorithm=copy.deepcopy(algorithm))
    assert accepted.algorithm == algorithm
    # ... and refuses it only when calibrating (the empty string alone would run no
    # calibration there; qconfig asks for a known name or null)
    if algorithm != "":
        with pytest.raises(Exception):  # noqa: B017 - AssertionError, KeyError, ValidationError
            for mode, config in get_modelike_from_algo_cfg(copy.deepcopy(algorithm)):
                CalibrateModeRegistry[mode].config_class(**config)
    # qconfig rejects it at config time, on `algorithm`, naming the known methods
    with pytest.raises(ValidationError) as info:
        qc.QuantizeConfig(algorithm=copy.deepcopy(algorithm))
    (error,) = info.value.errors()
    assert error["loc"] == ("algorithm",)
    assert error["type"] == "value_error"
    assert "known methods: " + ", ".join(known_methods()) in error["msg"]
    if isinstance(algorithm, list):
        assert error["msg"].startswith("Value error, algorithm[1]: ")


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [
        (5, "rejected"),
        (1.5, "rejected"),
        (True, "rejected"),
        ([["max"]], "rejected"),
        ([5], "rejected"),
        (("max", None), "accepted"),  # tuples and sets are coerced to lists by both
        ({"max"}, "accepted"),
        ([], "accepted"),
        ([None, "max", {"method": "gptq"}], "accepted"),
    ],
    ids=repr,
)
def test_algorithm_types(algorithm: Any, kind: str):
    assert check_quantize_config({"algorithm": algorithm}) == kind


# ---------------------------------------------------------------------------------------------
# Generated configs
# ---------------------------------------------------------------------------------------------


def mix(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """``one_of`` with weights (``one_of`` itself merges repeated strategies)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(pool).flatmap(lambda strategy: strategy)


def weighted(valid: list, invalid: list, weight: int = 5) -> st.SearchStrategy:
    """Mostly valid values: an invalid one in one draw out of ``weight + 1``."""
    if not invalid:
        return st.sampled_from(valid)
    return mix((weight, st.sampled_from(valid)), (1, st.sampled_from(invalid)))


BOOL_BAD = ["maybe", None, 2, 1.5]


def block_sizes_strategy() -> st.SearchStrategy:
    axes = st.dictionaries(
        weighted([-1, -2], [0, "-1", 1.5, 2.0]),
        weighted([16, 32, 128, None], [(1, 2), "x", True, 128.0, {1: 2}, 12.5]),
        min_size=0,
        max_size=2,
    )
    special = st.fixed_dictionaries(
        {},
        optional={
            "type": weighted(["static", "dynamic"], ["bogus", 1]),
            "scale_bits": weighted([(4, 3), (8, 0)], [8, "e8m0"]),
            "scale_block_sizes": st.sampled_from([{-1: 16}, None]),
            "four_over_six": st.sampled_from([True, False, 1]),
        },
    )
    extra = weighted([{}], [{"bogus": 1}, {"enable": True}])
    built = st.builds(lambda a, s, e: {**a, **s, **e}, axes, special, extra)
    return mix((4, built), (1, st.sampled_from([None, {}, "x", [1], 5])))


def bias_strategy() -> st.SearchStrategy:
    axes = st.dictionaries(
        weighted([-1, -2, -4], ["axis", "enable", 1.5]),
        weighted([None], [True, (1, 2), 1, "static", "x"]),
        max_size=2,
    )
    special = st.fixed_dictionaries(
        {},
        optional={
            "type": weighted(["static", "dynamic"], ["bogus"]),
            "method": weighted(["mean", "max_min"], ["median"]),
        },
    )
    built = st.builds(lambda a, s: {**a, **s}, axes, special)
    return mix((3, built), (1, st.sampled_from([None, {}, {"enable": True}, "x", [1]])))


ROTATE_VALID = [
    True,
    False,
    {"enable": True},
    {},
    {"enable": True, "mode": "rotate_back", "rotate_fp32": True, "block_size": 16},
]
ROTATE_INVALID = [
    {"mode": "bogus"},
    {"block_size": 0},
    {"block_size": True},
    {"block_size": 1.5},
    {"block_size": "16"},
    {"block_size": -3},
    {"bogus": 1},
    "maybe",
    2,
    None,
]

ATTRIBUTE_VALUES: dict[str, st.SearchStrategy] = {
    "enable": weighted([True, False], [0, 1, "false", "yes", None, 2]),
    "num_bits": weighted(
        [8, 4, (4, 3), (2, 1), [4, 3], (5, 2), (3, 2), "e4m3"],
        [0, -1, True, 4.0, 4.5, (1, 1), (0, 3), (3, 0), (4, 3, 1), (-1, 2), None, (4,)],
    ),
    "effective_bits": weighted([None, 4.5, 16, 8], [0, -1, 16.5, NAN, "x", math.inf]),
    "axis": weighted([None, 0, -1, (0, 1), [0, 1]], ["x", 1.5, (None,), {"a": 1}]),
    "fake_quant": weighted([True, False], BOOL_BAD),
    "unsigned": weighted([True, False], BOOL_BAD),
    "narrow_range": weighted([True, False], BOOL_BAD),
    "learn_amax": weighted([False], [True, "yes", None]),
    "type": weighted(["static", "dynamic"], ["Static", "bogus", 1, None]),
    "block_sizes": block_sizes_strategy(),
    "bias": bias_strategy(),
    "trt_high_precision_dtype": weighted(["Float", "Half", "BFloat16"], ["float", "Double", 1]),
    "calibrator": weighted(["max", "histogram", ("my.Calibrator",), int], ["minmax", "", 5, None]),
    "rotate": weighted(ROTATE_VALID, ROTATE_INVALID),
    "pass_through_bwd": weighted([True, False], BOOL_BAD),
    "backend": weighted([None, "custom_backend"], [5, ["x"]]),
    "backend_extra_args": weighted(
        [None, {}, {"a": 1}, {"enable": True, "x": 1}],
        [{"enable": True}, {"nested": {"enable": True}}, "x", [1]],
    ),
    "use_constant_amax": weighted([False, True], BOOL_BAD),
    "constant_amax": weighted([None, 1.0, 2688.0, math.inf], [0, -1.0, NAN, "x"]),
    "num_bit": st.just(8),  # unknown key
}

TEMPLATES = [
    {},
    {},
    {"num_bits": 8, "axis": 0},
    {"num_bits": 8, "axis": None},
    {"num_bits": (4, 3), "axis": None},
    {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
    {"num_bits": (2, 1), "block_sizes": {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}},
    {"num_bits": (4, 3), "block_sizes": {-1: 32, "type": "dynamic", "scale_bits": (8, 0)}},
    {"num_bits": (4, 3), "type": "dynamic", "block_sizes": {-1: None}},
    {"enable": False},
]


def _merged(template: dict, override: dict) -> dict:
    out = dict(template)
    for key, value in override.items():
        if key == "axis" and "block_sizes" in out and value is not None:
            out.pop("block_sizes")  # keep some axis overrides valid
        out[key] = value
    return out


attribute_dicts = st.builds(
    _merged,
    st.sampled_from(TEMPLATES),
    st.lists(st.sampled_from(list(ATTRIBUTE_VALUES)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: ATTRIBUTE_VALUES[k] for k in keys})
    ),
)

NAMES = weighted(
    [
        "*",
        "*weight_quantizer",
        "*input_quantizer",
        "*output_quantizer",
        "*lm_head*",
        "*[kv]_bmm_quantizer",
        "*mlp*weight_quantizer",
        "default",
    ],
    ["", "nn.Linear", 5, None, ("*",)],
    weight=8,
)
LEGACY_NAMES = st.sampled_from(
    ["*", "*weight_quantizer", "*input_quantizer", "*lm_head*", "default", "*[kv]_bmm_quantizer"]
)
PARENT_CLASSES = weighted([None, "nn.Linear", "nn.Conv2d", "nn.Embedding"], ["bogus", 5])
ENABLES = weighted([True, False], [0, 1, "false", "true", None, "maybe", 2])

# inside entries, plain known formats half of the time so that whole lists often validate
known_formats = st.sampled_from([t for t in TEMPLATES if t])
entry_attribute_dicts = mix((1, known_formats), (1, attribute_dicts))

cfg_values = mix(
    (6, entry_attribute_dicts),
    (2, st.lists(entry_attribute_dicts, min_size=1, max_size=3)),
    (1, st.sampled_from([None, {}, [], [{}], [{}, {}], (), 8, "int8", 1.5])),
)

new_entries = st.fixed_dictionaries(
    {"quantizer_name": NAMES},
    optional={
        "parent_class": PARENT_CLASSES,
        "cfg": cfg_values,
        "enable": ENABLES,
    },
)
new_entries_with_unknown = st.builds(lambda e: {**e, "bogus": 1}, new_entries)

legacy_values = mix(
    (6, entry_attribute_dicts),
    (2, st.lists(entry_attribute_dicts, min_size=1, max_size=2)),
    (1, st.sampled_from([None, {}, [], 8, "int8"])),
)
legacy_single = st.builds(lambda k, v: {k: v}, LEGACY_NAMES, legacy_values)

# Scoped sub-configs: mappings, None or scalars; never sequences (Model Optimizer would run
# `dict(sub_cfg)` on them: a documented difference tested in test_models).
NN_CLASSES = st.sampled_from(["nn.Linear", "nn.Conv2d", "nn.Bogus"])
scoped_sub_cfgs = mix((6, entry_attribute_dicts), (1, st.sampled_from([None, 8, "x", 1.5])))
nn_scoped = st.builds(
    lambda cls, subs: {cls: subs},
    NN_CLASSES,
    mix(
        (6, st.dictionaries(LEGACY_NAMES, scoped_sub_cfgs, max_size=2)),
        (1, st.sampled_from([8, "x", None, [{"*": {"enable": False}}]])),
    ),
)
multi_key_with_nn = st.builds(
    lambda a, b: {**a, **b}, st.one_of(legacy_single, nn_scoped), nn_scoped
)
multi_key_without_nn = st.builds(lambda a, b: {**a, **b}, legacy_single, legacy_single)
bad_elements = st.sampled_from(
    [[{"*": {"enable": False}}], "*", 5, None, ("*", {}), {1: {"enable": False}, "x": 1}]
)

elements = mix(
    (12, new_entries),
    (8, legacy_single),
    (3, nn_scoped),
    (2, multi_key_with_nn),
    (1, multi_key_without_nn),
    (1, new_entries_with_unknown),
    (1, bad_elements),
)


def _flat(pairs: list[dict]) -> dict:
    out: dict = {}
    for pair in pairs:
        out.update(pair)
    return out


quant_cfgs = mix(
    (10, st.lists(elements, max_size=5)),
    (1, st.lists(elements, max_size=3).map(tuple)),
    (3, st.lists(mix((3, legacy_single), (1, nn_scoped)), max_size=5).map(_flat)),
    (1, st.sampled_from([None, "*", 5, b"x", 1.5, {"quantizer_name": "*", "enable": False}])),
)

# --- algorithms -----------------------------------------------------------------------------

BOOL_FIELD = weighted([True, False], ["x", None])
ALGORITHM_FIELD_VALUES: dict[str, st.SearchStrategy] = {
    "moe_calib_experts_ratio": weighted([None, 0.5, 1.0], [0, 1.5, "x"]),
    "layerwise": weighted(
        [
            None,
            {},
            {"enable": True},
            {"enable": True, "checkpoint_dir": "/tmp/ckpt", "save_every": 2},
            {"get_qdq_activations_from_prev_layer": False},
            {"calib_mutates_weights": False},
        ],
        [{"checkpoint_dir": "/tmp/ckpt"}, {"save_every": 0}, True, {"bogus": 1}, "x"],
    ),
    "shared_states": weighted(
        [
            None,
            {"weight_global_amax": {"patterns": [r"model\.layers\.\d+\.mlp"]}},
            {"weight_global_amax": {"patterns": []}},
            {"weight_global_amax": {}},
        ],
        [
            {"bogus": {"patterns": []}},
            {"weight_global_amax": {"pattern": []}},
            {"weight_global_amax": {"patterns": ["("]}},
            {"weight_global_amax": ["x"]},
        ],
    ),
    "distributed_sync": weighted([True, False, None], ["x"]),
    "sync_expert_weight_amax": BOOL_FIELD,
    "skip_forward_without_activation_calib": BOOL_FIELD,
    "fp8_scale_sweep": BOOL_FIELD,
    "debug": BOOL_FIELD,
    "fused": BOOL_FIELD,
    "tied_amax": BOOL_FIELD,
    "quantize_pre_scale": BOOL_FIELD,
    "step_size": weighted([0.5, 1.0, None], [0, -1]),
    "start_multiplier": weighted([0.25, 1.0], [0, -1]),
    "stop_multiplier": weighted([4.0, 1.5], [0, "x"]),
    "block_size": weighted([16, 128, None], [0, "x"]),
    "alpha": weighted([0.0, 0.5, 1.0, None], [1.5, -0.1]),
    "alpha_step": weighted([0.1, 1.0], [0, 2]),
    "max_co_batch_size": weighted([1024, 0, None], ["x"]),
    "max_tokens_per_batch": weighted([64, None], ["x"]),
    "min_clip_ratio": weighted([0.5, 0.9], [0, 1]),
    "shrink_step": weighted([0.05, 1.0], [0, 1.5]),
    "lowrank": weighted([32, None], ["x"]),
    "skip_layers": weighted([None, ["*.attn*"], []], ["x", [1]]),
    "perc_damp": weighted([0.01, 1.0], [0, 2]),
    "anchor_percentile": weighted([1.0, 100.0], [0, 101]),
    "upper_percentile": weighted([99.99, 100.0], [0, 101]),
    "rho": weighted([16384.0, 1.0], [28672.0, 0]),
    "weight_scale_algorithm": weighted(
        [
            {"method": "max"},
            {"method": "mse", "fp8_scale_sweep": True},
            {"method": "local_hessian"},
        ],
        [{"method": "awq_lite"}, {}, "max", {"method": "max", "bogus": 1}],
    ),
    "learnable_amax": weighted([["post"], ["pre", "post"], [], "pre", "post"], ["both", ["x"]]),
    "scale_algorithm": weighted([None, {"method": "mse"}], [{"method": "gptq"}]),
    "bogus": st.just(1),
}


def _fields_of(method: Any) -> list[str]:
    cls = ALGORITHMS.get(method) if isinstance(method, str | None) else None
    own = [f for f in (cls.model_fields if cls else ()) if f != "method"]
    return own * 4 + ["bogus", "alpha", "fused", "layerwise"]


def _algorithm_dict(method: Any, keys: list[str]) -> st.SearchStrategy:
    fields = st.fixed_dictionaries({k: ALGORITHM_FIELD_VALUES[k] for k in keys})
    if method == "<missing>":
        return fields
    return fields.map(lambda d: {"method": method, **d})


ALGORITHM_NAMES = weighted(
    [*known_methods(), None], ["awq", "nope", "", "MAX", "max_calibrate"], weight=3
)
algorithm_dicts = ALGORITHM_NAMES.flatmap(
    lambda m: st.lists(st.sampled_from(_fields_of(m)), max_size=3, unique=True).flatmap(
        lambda keys: _algorithm_dict(m, keys)
    )
) | st.lists(st.sampled_from(list(ALGORITHM_FIELD_VALUES)), max_size=2, unique=True).flatmap(
    lambda keys: _algorithm_dict("<missing>", keys)
)
# for the algorithm classes themselves: a known method and some fields
class_algorithm_dicts = st.sampled_from([*known_methods(), None]).flatmap(
    lambda m: st.lists(st.sampled_from(_fields_of(m)), max_size=3, unique=True).flatmap(
        lambda keys: _algorithm_dict(m, keys)
    )
)
algorithm_forms = mix((1, ALGORITHM_NAMES), (2, algorithm_dicts))
bad_algorithm_forms = st.sampled_from([5, 1.5, True, [["max"]], b"max", ("max", 5)])
algorithms = mix(
    (4, algorithm_forms),
    (2, st.lists(algorithm_forms, max_size=3)),
    (1, st.lists(mix((2, algorithm_forms), (1, bad_algorithm_forms)), min_size=1, max_size=3)),
    (2, bad_algorithm_forms),
)

quantize_configs_without_unknown_keys = st.fixed_dictionaries(
    {},
    optional={
        "quant_cfg": quant_cfgs,
        "algorithm": algorithms,
        "effective_bits": weighted([None, 4.5, 16.0], [0, 17, "x", NAN]),
    },
)
quantize_configs = mix(
    (8, quantize_configs_without_unknown_keys),
    (1, st.builds(lambda c: {**c, "bogus": 1}, quantize_configs_without_unknown_keys)),
)

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def run_fuzz(strategy: st.SearchStrategy, check: Callable[[Any], str], n: int) -> Counter:
    """Run ``check`` on ``n`` generated inputs; returns how many of each kind there were."""
    kinds: Counter = Counter()

    @settings(FUZZ, max_examples=n)
    @given(strategy)
    def one(raw: Any) -> None:
        kinds[check(raw)] += 1

    one()
    print(kinds)
    assert kinds.total() >= n
    return kinds


def test_generated_attribute_configs():
    kinds = run_fuzz(
        attribute_dicts,
        lambda raw: check_model(mc.QuantizerAttributeConfig, qc.QuantizerAttributeConfig, raw),
        400,
    )
    assert kinds["accepted"] >= 100 and kinds["rejected"] >= 100, kinds


def test_generated_entries():
    kinds = run_fuzz(
        mix((6, new_entries), (1, new_entries_with_unknown)),
        lambda raw: check_model(mc.QuantizerCfgEntry, qc.QuantizerCfgEntry, raw),
        300,
    )
    assert kinds["accepted"] >= 50 and kinds["rejected"] >= 50, kinds


def test_generated_quant_cfgs():
    kinds = run_fuzz(quant_cfgs, check_quant_cfg, 700)
    assert kinds["accepted"] >= 100 and kinds["rejected"] >= 100, kinds


def test_generated_quantize_configs():
    kinds = run_fuzz(quantize_configs, check_quantize_config, 500)
    assert min(kinds["accepted"], kinds["rejected"], kinds["stricter"]) >= 50, kinds


def test_generated_algorithms():
    kinds = run_fuzz(algorithms, lambda a: check_quantize_config({"algorithm": a}), 300)
    # Model Optimizer only rejects wrong types: few distinct ones
    assert min(kinds["accepted"], kinds["stricter"]) >= 50 and kinds["rejected"] >= 10, kinds


def _check_algorithm_class(raw: dict) -> str:
    cls = ALGORITHMS[raw["method"]]
    return check_model(getattr(mc, cls.__name__), cls, raw)


def test_generated_algorithm_configs():
    kinds = run_fuzz(class_algorithm_dicts, _check_algorithm_class, 300)
    assert kinds["accepted"] >= 50 and kinds["rejected"] >= 50, kinds

"""Hostile and wrong manifests and plans (issue 11): a DocumentError at the JSON path, every time.

``Manifest.from_json`` / ``Plan.from_json`` raise ``qconfig.errors.DocumentError`` (with
``path``, the JSON path of the offending value, and ``file`` when read from one) for every
malformed document, and nothing else; ``Manifest.load`` / ``Plan.load`` add
``qconfig.fileio.InputFileError`` for files that cannot be read as text. The property tests
mutate real documents (those of the example manifests and presets) node by node.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qconfig import presets
from qconfig.compile import compile_plan
from qconfig.compile.errors import CompileError
from qconfig.documents import MAX_DEPTH, MAX_INT_DIGITS
from qconfig.errors import DocumentError
from qconfig.fileio import InputFileError
from qconfig.loader import load_config
from qconfig.manifest import Manifest
from qconfig.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "examples" / "manifests").glob("*.json"))
LLAMA = ROOT / "examples" / "manifests" / "llama_decoder.json"
V1_PLAN = ROOT / "tests" / "data" / "plan_v1_llama_w4a8_awq.json"

Loader = Callable[..., Any]
LOADERS = [pytest.param(Manifest.from_json, id="manifest"), pytest.param(Plan.from_json, id="plan")]


@functools.cache
def _plan_text(preset: str = "W4A8_AWQ_BETA_CFG", manifest: Path = LLAMA) -> str:
    return compile_plan(load_config(presets.get(preset)), Manifest.load(manifest)).to_json()


def _plan_doc() -> dict[str, Any]:
    return json.loads(_plan_text())


def _manifest_doc() -> dict[str, Any]:
    return json.loads(LLAMA.read_text(encoding="utf-8"))


def _refused(load: Loader, doc: Any) -> DocumentError:
    text = doc if isinstance(doc, (str, bytes)) else json.dumps(doc)
    with pytest.raises(DocumentError) as caught:
        load(text)
    assert "Traceback" not in str(caught.value)
    assert "\n" not in str(caught.value)
    return caught.value


# -- JSON text ------------------------------------------------------------------------------------
@pytest.mark.parametrize("load", LOADERS)
def test_a_json_syntax_error_says_line_and_column(load: Loader) -> None:
    err = _refused(load, '{"format":\n  "x",}')
    assert err.path == ()
    assert "not valid JSON" in err.message and "line 2, column 7" in err.message


@pytest.mark.parametrize("load", LOADERS)
@pytest.mark.parametrize("text", ["", "   ", "{", "[1,", '"abc', "nul", "{'a': 1}"])
def test_truncated_or_empty_text_is_a_syntax_error(load: Loader, text: str) -> None:
    assert "not valid JSON" in _refused(load, text).message


@pytest.mark.parametrize("load", LOADERS)
def test_bytes_that_are_not_utf8_are_located(load: Loader) -> None:
    err = _refused(load, b'{"format":\n "\xff"}')
    assert "not valid UTF-8 at line 2, column 3" in err.message


def test_a_leading_bom_is_accepted() -> None:
    text = LLAMA.read_text(encoding="utf-8")
    assert Manifest.from_json(b"\xef\xbb\xbf" + text.encode()) == Manifest.from_json(text)
    assert Plan.from_json("\ufeff" + _plan_text()) == Plan.from_json(_plan_text())


@pytest.mark.parametrize("load", LOADERS)
def test_deep_nesting_is_refused_quickly_with_its_position(load: Loader) -> None:
    """json raises RecursionError near 1,000 levels; a million brackets cost nothing."""
    start = time.perf_counter()
    err = _refused(load, '{"format": ' + "[" * 1_000_000)
    assert time.perf_counter() - start < 1.0
    assert f"nested more than {MAX_DEPTH} levels deep at line 1, column" in err.message


def test_deep_nesting_inside_an_attribute_set_is_located() -> None:
    """Below json's own limit, but deeper than any valid plan: refused at its JSON path before
    recursive code reads it."""
    doc = _plan_doc()
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    doc["attribute_sets"][0]["backend_extra_args"] = deep
    err = _refused(Plan.from_json, doc)
    assert err.path[:3] == ("attribute_sets", 0, "backend_extra_args")
    assert len(err.path) == MAX_DEPTH and "nested more than" in err.message


def test_deep_nesting_in_manifest_defaults_is_located() -> None:
    doc = _manifest_doc()
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    doc["modules"][1]["quantizers"][0]["defaults"] = {"backend_extra_args": {"x": deep}}
    err = _refused(Manifest.from_json, doc)
    assert err.path[:6] == ("modules", 1, "quantizers", 0, "defaults", "backend_extra_args")


@pytest.mark.parametrize("load", LOADERS)
def test_an_integer_beyond_the_int_string_limit_is_located(load: Loader) -> None:
    """json.loads raised a bare ValueError (Python's 4,300-digit limit)."""
    err = _refused(load, '{"format": "x", "model": [0, ' + "7" * 5000 + "]}")
    assert err.path == ("model", 1)
    assert "5,000 digits" in err.message


def test_huge_integer_literals_are_refused_fast_even_without_the_int_string_limit() -> None:
    """With the limit lifted, int() of a million digits would take minutes (quadratic)."""
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        start = time.perf_counter()
        err = _refused(Plan.from_json, '{"quantizers": {"q": ' + "9" * 1_000_000 + "}}")
        assert time.perf_counter() - start < 1.0
    finally:
        sys.set_int_max_str_digits(previous)
    assert err.path == ("quantizers", "q")
    assert f"at most {MAX_INT_DIGITS} digits" in err.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e400"])
def test_non_finite_numbers_are_refused_at_their_path(literal: str) -> None:
    text = _plan_text().replace('"constant_amax":null', f'"constant_amax":{literal}', 1)
    err = _refused(Plan.from_json, text)
    assert err.path == ("attribute_sets", 0, "constant_amax")
    doc = _manifest_doc()
    doc["modules"][1]["quantizers"][0]["defaults"] = {"effective_bits": "@"}
    text = json.dumps(doc).replace('"@"', literal)
    err = _refused(Manifest.from_json, text)
    assert err.path == ("modules", 1, "quantizers", 0, "defaults", "effective_bits")


def test_a_quantizer_named_twice_in_a_plan_is_refused() -> None:
    """json.loads keeps the last of two equal keys: one quantizer would silently get the other's
    state."""
    text = _plan_text()
    name = next(iter(_plan_doc()["quantizers"]))
    text = text.replace('"quantizers":{', f'"quantizers":{{"{name}":0,', 1)
    err = _refused(Plan.from_json, text)
    assert err.path == ("quantizers",)
    assert repr(name) in err.message and "more than once" in err.message


def test_a_key_given_twice_in_a_manifest_is_refused() -> None:
    text = LLAMA.read_text(encoding="utf-8")
    text = text.replace('"class_name":', '"name": "other", "class_name":', 1)
    err = _refused(Manifest.from_json, text)
    assert err.path == ("modules", 0)
    assert "'name' appears more than once" in err.message


# -- manifests, field by field --------------------------------------------------------------------
def _set(path: tuple, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _delete(path: tuple) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        node = doc
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


SITE = ("modules", 1, "quantizers", 0)
MANIFEST_DEFECTS = {
    "modules: 5": (_set(("modules",), 5), ("modules",), "valid list"),
    "quantizers: 5": (_set(("modules", 0, "quantizers"), 5), ("modules", 0, "quantizers"), "list"),
    "a module that is a number": (_set(("modules", 2), 5), ("modules", 2), "dictionary"),
    "weight_shape strings": (
        _set(("modules", 1, "weight_shape"), ["16", 32]),
        ("modules", 1, "weight_shape", 0),
        'the string "16"',
    ),
    "weight_shape booleans": (
        _set(("modules", 1, "weight_shape"), [True, 32]),
        ("modules", 1, "weight_shape", 0),
        "the boolean true",
    ),
    "negative weight_shape": (
        _set(("modules", 1, "weight_shape"), [-16, 32]),
        ("modules", 1, "weight_shape"),
        "negative",
    ),
    "name: 3": (_set(("modules", 1, "name"), 3), ("modules", 1, "name"), "valid string"),
    "name missing": (
        _delete(("modules", 1, "name")),
        ("modules", 1),
        "missing required key 'name'",
    ),
    "unknown module key": (
        _set(("modules", 1, "colour"), "red"),
        ("modules", 1, "colour"),
        "Extra",
    ),
    "registry_keys: string": (_set(("registry_keys",), "nn.Linear"), ("registry_keys",), "list"),
    "defaults: 5": (_set((*SITE, "defaults"), 5), (*SITE, "defaults"), "dictionary"),
    "num_bits: true": (
        _set((*SITE, "defaults"), {"num_bits": True}),
        (*SITE, "defaults", "num_bits"),
        "the boolean true",
    ),
    "axis: '0'": (
        _set((*SITE, "defaults"), {"axis": "0"}),
        (*SITE, "defaults", "axis"),
        'the string "0"',
    ),
    "enable: 1": (_set((*SITE, "defaults"), {"enable": 1}), (*SITE, "defaults", "enable"), "bool"),
    "block key": (
        _set((*SITE, "defaults"), {"num_bits": 4, "block_sizes": {"-1": "16"}}),
        (*SITE, "defaults", "block_sizes"),
        "block_sizes[-1] must be",
    ),
    "hard_disabled: 'no'": (_set((*SITE, "hard_disabled"), "no"), (*SITE, "hard_disabled"), "bool"),
    "empty attribute": (_set((*SITE, "attribute"), ""), (*SITE, "attribute"), "empty"),
    "format missing": (_delete(("format",)), (), "missing required key 'format'"),
    "format v2": (_set(("format",), "qconfig.manifest/v2"), ("format",), "qconfig.manifest/v1"),
    "format: 1": (_set(("format",), 1), ("format",), "the integer 1"),
}


@pytest.mark.parametrize("defect", MANIFEST_DEFECTS)
def test_manifest_defects_are_located(defect: str) -> None:
    mutate, path, fragment = MANIFEST_DEFECTS[defect]
    doc = _manifest_doc()
    mutate(doc)
    err = _refused(Manifest.from_json, doc)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


@pytest.mark.parametrize("doc", [[1, 2], "manifest", 5, None])
def test_a_manifest_is_an_object(doc: Any) -> None:
    err = _refused(Manifest.from_json, json.dumps(doc))
    assert err.path == () and "a manifest (a JSON object)" in err.message


def test_a_plan_given_as_a_manifest_says_so() -> None:
    err = _refused(Manifest.from_json, _plan_text())
    assert err.path == ("format",) and "this is a plan, not a manifest" in err.message


def test_a_module_listed_twice_is_refused_with_both_paths() -> None:
    doc = _manifest_doc()
    doc["modules"].append(copy.deepcopy(doc["modules"][1]))
    err = _refused(Manifest.from_json, doc)
    last = len(doc["modules"]) - 1
    assert err.path == ("modules", last, "name")
    assert "already used by modules[1]" in err.message


def test_a_quantizer_listed_twice_in_a_module_is_refused_with_both_paths() -> None:
    """Before issue 11 the plan silently kept one of the two."""
    doc = _manifest_doc()
    sites = doc["modules"][1]["quantizers"]
    sites.append(copy.deepcopy(sites[0]) | {"defaults": {"num_bits": 4}})
    err = _refused(Manifest.from_json, doc)
    assert err.path == ("modules", 1, "quantizers", len(sites) - 1, "attribute")
    assert "already used by modules[1].quantizers[0]" in err.message


def test_two_modules_whose_quantizers_get_one_full_name_are_refused() -> None:
    """``a`` + ``b.weight_quantizer`` and ``a.b`` + ``weight_quantizer`` are both
    ``a.b.weight_quantizer``."""
    doc = _manifest_doc()
    first, second = copy.deepcopy(doc["modules"][1]), copy.deepcopy(doc["modules"][1])
    first["name"], first["quantizers"] = "blk", [first["quantizers"][0] | {"attribute": "x.wq"}]
    second["name"], second["quantizers"] = "blk.x", [second["quantizers"][0] | {"attribute": "wq"}]
    doc["modules"] += [first, second]
    err = _refused(Manifest.from_json, doc)
    n = len(doc["modules"])
    assert err.path == ("modules", n - 1, "quantizers", 0, "attribute")
    assert f"'blk.x.wq' is already used by modules[{n - 2}].quantizers[0]" in err.message


def test_every_pydantic_error_is_kept_in_the_message() -> None:
    doc = _manifest_doc()
    doc["modules"][1]["name"] = 3
    doc["modules"][2]["class_name"] = None
    for module in doc["modules"][3:]:
        module["registry_key"] = 7
    err = _refused(Manifest.from_json, doc)
    assert err.path == ("modules", 1, "name")
    assert "modules[2].class_name" in err.message
    assert f"and {1 + len(doc['modules'][3:]) - 5} more" in err.message  # the message is short ...
    everything = err.errors  # type: ignore[attr-defined]
    assert len(everything) == 2 + len(doc["modules"][3:])  # ... the attribute keeps them all
    assert everything[0] == (("modules", 1, "name"), "Input should be a valid string")
    assert everything[-1][0] == ("modules", len(doc["modules"]) - 1, "registry_key")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_example_manifests_round_trip(path: Path) -> None:
    manifest = Manifest.load(path)
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert len(set(manifest.quantizer_names())) == len(manifest.quantizer_names())


# -- plans, field by field ------------------------------------------------------------------------
def _enabled_state(doc: dict) -> int:
    return next(
        i
        for i, s in enumerate(doc["states"])
        if s["enable"] and not isinstance(s["attributes"], list)
    )


PLAN_DEFECTS = {
    "negative set index": (
        _set(("states", 0, "attributes"), -1),
        ("states", 0, "attributes"),
        "index -1",
    ),
    "boolean set index": (
        _set(("states", 0, "attributes"), True),
        ("states", 0, "attributes"),
        "boolean",
    ),
    "string set index": (
        _set(("states", 0, "attributes"), "0"),
        ("states", 0, "attributes"),
        "string",
    ),
    "set index past the end": (
        _set(("states", 0, "attributes"), 99),
        ("states", 0, "attributes"),
        "99",
    ),
    "negative index in a sequential": (
        _set(("states", 0, "attributes"), [0, -1]),
        ("states", 0, "attributes", 1),
        "index -1",
    ),
    "float index in a sequential": (
        _set(("states", 0, "attributes"), [0, 1.0]),
        ("states", 0, "attributes", 1),
        "the number 1.0",
    ),
    "empty sequential": (
        _set(("states", 0, "attributes"), []),
        ("states", 0, "attributes"),
        "at least one",
    ),
    "enable: 0": (_set(("states", 0, "enable"), 0), ("states", 0, "enable"), "true or false"),
    "enable missing": (
        _delete(("states", 0, "enable")),
        ("states", 0),
        "missing required key 'enable'",
    ),
    "parent_class: null": (
        _set(("states", 0, "parent_class"), None),
        ("states", 0, "parent_class"),
        "null",
    ),
    "sources: '01'": (_set(("states", 0, "sources"), "01"), ("states", 0, "sources"), "array"),
    "negative source": (
        _set(("states", 0, "sources"), [0, -2]),
        ("states", 0, "sources", 1),
        ">= 0",
    ),
    "boolean source": (
        _set(("states", 0, "sources"), [True]),
        ("states", 0, "sources", 0),
        "boolean",
    ),
    "hard_disabled: 1": (
        _set(("states", 0, "hard_disabled"), 1),
        ("states", 0, "hard_disabled"),
        "true or false",
    ),
    "unknown state key": (_set(("states", 0, "why"), "x"), ("states", 0, "why"), "unknown key"),
    "state is a list": (_set(("states", 0), [0]), ("states", 0), "an object"),
    "states: 5": (_set(("states",), 5), ("states",), "an array"),
    "quantizers: list": (_set(("quantizers",), [0]), ("quantizers",), "an object"),
    "negative state index": (
        _set(("quantizers", "lm_head.weight_quantizer"), -1),
        ("quantizers", "lm_head.weight_quantizer"),
        "index -1",
    ),
    "boolean state index": (
        _set(("quantizers", "lm_head.weight_quantizer"), False),
        ("quantizers", "lm_head.weight_quantizer"),
        "boolean",
    ),
    "empty quantizer name": (_set(("quantizers", ""), 0), ("quantizers", ""), "empty"),
    "attribute set: 5": (_set(("attribute_sets", 0), 5), ("attribute_sets", 0), "an object"),
    "attribute_sets: {}": (_set(("attribute_sets",), {}), ("attribute_sets",), "an array"),
    "num_bits: true": (
        _set(("attribute_sets", 0, "num_bits"), True),
        ("attribute_sets", 0, "num_bits"),
        "the boolean true",
    ),
    "axis: '0'": (
        _set(("attribute_sets", 0, "axis"), "0"),
        ("attribute_sets", 0, "axis"),
        "string",
    ),
    "unknown attribute": (
        _set(("attribute_sets", 0, "bits"), 8),
        ("attribute_sets", 0, "bits"),
        "unknown key",
    ),
    "specs: one short": (lambda d: d["specs"].pop(), ("specs",), "specs for"),
    "spec edited": (
        _set(("specs", 0, "family"), "fp"),
        ("specs", 0),
        "does not match attribute_sets[0]",
    ),
    "algorithm: 'max'": (
        _set(("algorithm",), "max"),
        ("algorithm",),
        "a list of calibration steps",
    ),
    "algorithm: {'method': 'max'}": (
        _set(("algorithm",), {"method": "max"}),
        ("algorithm",),
        "a list",
    ),
    "algorithm: ['max']": (_set(("algorithm",), ["max"]), ("algorithm", 0), "calibration step"),
    "algorithm without method": (_set(("algorithm",), [{}]), ("algorithm", 0), "'method'"),
    "unknown method": (
        _set(("algorithm",), [{"method": "maxx"}]),
        ("algorithm", 0, "method"),
        "maxx",
    ),
    "method: 5": (
        _set(("algorithm",), [{"method": 5}]),
        ("algorithm", 0, "method"),
        "the integer 5",
    ),
    "option of the wrong type": (
        _set(("algorithm",), [{"method": "awq_lite", "alpha_step": "0.1"}]),
        ("algorithm", 0, "alpha_step"),
        'the string "0.1"',
    ),
    "unknown option": (
        _set(("algorithm",), [{"method": "max", "bogus": 1}]),
        ("algorithm", 0, "bogus"),
        "Extra",
    ),
    "diagnostics: 5": (_set(("diagnostics",), 5), ("diagnostics",), "an array"),
    "diagnostic severity": (
        _set(("diagnostics",), [{"code": "QC1", "severity": "fatal", "message": "m"}]),
        ("diagnostics", 0, "severity"),
        "fatal",
    ),
    "diagnostic line: true": (
        _set(("diagnostics",), [{"code": "QC1", "severity": "info", "message": "m", "line": True}]),
        ("diagnostics", 0, "line"),
        "boolean",
    ),
    "diagnostic without message": (
        _set(("diagnostics",), [{"code": "QC1", "severity": "info"}]),
        ("diagnostics", 0),
        "'message'",
    ),
    "model: null": (_set(("model",), None), ("model",), "a string"),
    "states missing": (_delete(("states",)), (), "missing required key 'states'"),
    "unknown top-level key": (_set(("extra",), 1), ("extra",), "unknown key"),
    "format v9": (_set(("format",), "qconfig.plan/v9"), ("format",), "not a plan document"),
}


@pytest.mark.parametrize("defect", PLAN_DEFECTS)
def test_plan_defects_are_located(defect: str) -> None:
    """Each used to be a bare KeyError/TypeError/IndexError, or was silently accepted (index -1
    picked the last set, ``True`` the second, ``"max"`` was iterated letter by letter)."""
    mutate, path, fragment = PLAN_DEFECTS[defect]
    doc = _plan_doc()
    mutate(doc)
    err = _refused(Plan.from_json, doc)
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)


def test_a_state_enable_that_contradicts_its_attributes_is_refused() -> None:
    """``apply_plan`` applies the attribute sets, so ``enable: false`` on a state whose set says
    ``enable: true`` would quantize anyway: refused, naming where to edit."""
    doc = _plan_doc()
    index = _enabled_state(doc)
    doc["states"][index]["enable"] = False
    err = _refused(Plan.from_json, doc)
    assert err.path == ("states", index, "enable")
    assert "edit their enable instead" in err.message


def test_disabling_through_the_attribute_set_is_the_supported_edit() -> None:
    doc = _plan_doc()
    index = _enabled_state(doc)
    state = doc["states"][index]
    doc["attribute_sets"].append(doc["attribute_sets"][state["attributes"]] | {"enable": False})
    doc["specs"].append(doc["specs"][state["attributes"]])
    state["attributes"], state["enable"] = len(doc["attribute_sets"]) - 1, False
    plan = Plan.from_json(json.dumps(doc))
    names = [n for n, i in doc["quantizers"].items() if i == index]
    assert names and all(not plan.quantizers[n].enable for n in names)
    assert all(not plan.quantizers[n].attributes.enable for n in names)


def test_a_hard_disabled_state_cannot_be_enabled() -> None:
    doc = _plan_doc()
    index = _enabled_state(doc)
    doc["states"][index]["hard_disabled"] = True
    err = _refused(Plan.from_json, doc)
    assert err.path == ("states", index, "hard_disabled")


@pytest.mark.parametrize("doc", [[1, 2], "plan", 5, None, {}])
def test_not_a_plan_document(doc: Any) -> None:
    assert "not a plan document" in _refused(Plan.from_json, json.dumps(doc)).message


def test_the_algorithm_forms_the_writer_produces_load() -> None:
    doc = _plan_doc()
    for steps in (
        [],
        [{"method": None}],
        [{"method": "max"}, {"method": "awq_lite", "alpha_step": 0.1}],
    ):
        doc["algorithm"] = steps
        plan = Plan.from_json(json.dumps(doc))
        assert [a.method for a in plan.algorithm] == [s["method"] for s in steps]
        assert json.loads(plan.to_json())["algorithm"] == steps


def test_a_v1_plan_still_loads_from_its_file() -> None:
    plan = Plan.load(V1_PLAN)
    assert plan.quantizers and plan.algorithm[0].method == "awq_lite"


# -- files ----------------------------------------------------------------------------------------
LOADS = [pytest.param(Manifest.load, id="manifest"), pytest.param(Plan.load, id="plan")]


@pytest.mark.parametrize("load", LOADS)
def test_special_files_are_input_file_errors_not_hangs(load: Loader, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path, reason in [
        (fifo, "FIFO"),
        (Path("/dev/zero"), "character device"),
        (Path("/dev/urandom"), "character device"),
        (tmp_path, "directory"),
        (tmp_path / "missing.json", "no such file"),
    ]:
        start = time.perf_counter()
        with pytest.raises(InputFileError, match=reason) as caught:
            load(path)
        assert time.perf_counter() - start < 1.0
        assert str(caught.value).startswith(str(path))


@pytest.mark.parametrize("load", LOADS)
def test_a_non_utf8_file_is_an_input_file_error(load: Loader, tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"model": "caf\xe9"}')
    with pytest.raises(InputFileError, match="line 1, column 15: not valid UTF-8"):
        load(path)


@pytest.mark.parametrize("load", LOADS)
def test_a_document_error_from_a_file_names_it(load: Loader, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"format": 1}', encoding="utf-8")
    with pytest.raises(DocumentError) as caught:
        load(path)
    assert caught.value.file == str(path)
    assert str(caught.value).startswith(f"{path}: format: ")


# -- round trips ----------------------------------------------------------------------------------
def _compiled_plans() -> list[Plan]:
    manifests = [Manifest.load(path) for path in MANIFESTS]
    plans = []
    for name in presets.names():
        config = load_config(presets.get(name))
        for manifest in manifests:
            try:
                plans.append(compile_plan(config, manifest))
            except CompileError:  # e.g. an MLP-only preset on the CNN: nothing to quantize
                continue
    return plans


def test_every_compiled_plan_round_trips() -> None:
    """For every preset on every example manifest: from_json(to_json(plan)) == plan."""
    plans = _compiled_plans()
    assert len(plans) > 100
    for plan in plans:
        again = Plan.from_json(plan.to_json())
        assert again == plan
        assert again.to_json() == plan.to_json()


# -- properties: any mutation loads or is a DocumentError -----------------------------------------
SCALARS = (
    st.none()
    | st.booleans()
    | st.sampled_from([-1, 0, 1, 2, 16, 2**63])
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "max", "dynamic", "-1", "0", "nn.Linear", "e4m3", "qconfig.plan/v2"])
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
KEYS = st.sampled_from(
    ["enable", "num_bits", "axis", "block_sizes", "type", "method", "attributes", "sources",
     "hard_disabled", "format", "quantizers", "name", "weight_shape", "defaults", "-1", ""]
) | st.text(max_size=6)  # fmt: skip


def _nodes(doc: Any) -> list[tuple[Any, ...]]:
    out, stack = [], [()]
    while stack:
        path = stack.pop()
        out.append(path)
        node = _at(doc, path)
        if isinstance(node, dict):
            stack.extend((*path, k) for k in node)
        elif isinstance(node, list):
            stack.extend((*path, i) for i in range(len(node)))
    return out


def _at(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated(draw: st.DrawFn, documents: list[str]) -> str:
    """A document with 1-3 mutations: a node replaced by another value (of any JSON type), a
    key or element deleted, or one added."""
    doc = json.loads(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_nodes(doc)))
        kind = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            if kind == "replace":
                doc = draw(JSON_VALUES)
            continue
        parent, key = _at(doc, path[:-1]), path[-1]
        if kind == "replace":
            parent[key] = draw(JSON_VALUES)
        elif kind == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(KEYS)] = draw(JSON_VALUES)
        else:
            parent.insert(key, draw(JSON_VALUES))
    return json.dumps(doc)


@functools.cache
def _plan_documents() -> list[str]:
    texts = [_plan_text(), _plan_text("NVFP4_DEFAULT_CFG", ROOT / "examples/manifests/cnn.json")]
    return [
        *texts,
        _plan_text("NVFP4_AWQ_LITE_CFG", ROOT / "examples/manifests/vlm.json"),
        V1_PLAN.read_text(),
    ]


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(st.data())
def test_a_mutated_plan_loads_to_a_valid_plan_or_is_a_document_error(data: st.DataObject) -> None:
    text = data.draw(mutated(_plan_documents()))
    try:
        plan = Plan.from_json(text)
    except DocumentError as err:
        assert str(err) and "\n" not in str(err)
        return
    again = Plan.from_json(plan.to_json())
    assert again == plan
    for q in plan.quantizers.values():
        attrs = q.attributes if isinstance(q.attributes, tuple) else (q.attributes,)
        assert q.enable == any(a.enable for a in attrs)


@PROPERTY
@given(st.data())
def test_a_mutated_manifest_loads_or_is_a_document_error(data: st.DataObject) -> None:
    texts = [LLAMA.read_text(encoding="utf-8"), (ROOT / "examples/manifests/cnn.json").read_text()]
    text = data.draw(mutated(texts))
    try:
        manifest = Manifest.from_json(text)
    except DocumentError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert Manifest.from_json(manifest.to_json()) == manifest
    names = manifest.quantizer_names()
    assert len(set(names)) == len(names)


@PROPERTY
@given(st.data())
def test_edited_plan_text_loads_or_is_a_document_error(data: st.DataObject) -> None:
    """Text-level damage: a slice deleted, or text inserted (brackets, quotes, NaN, huge ints)."""
    text = data.draw(st.sampled_from(_plan_documents()))
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 40)))
    insert = data.draw(
        st.sampled_from(["", "[", "{", '"', ",", "NaN", "-Infinity", "1e999", "9" * 5000, "\x00"])
        | st.text(max_size=5)
    )
    try:
        Plan.from_json(text[:start] + insert + text[end:])
    except DocumentError:
        pass


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.text(max_size=40), st.binary(max_size=40)))
@pytest.mark.parametrize("load", LOADERS)
def test_arbitrary_text_loads_or_is_a_document_error(load: Loader, text: str | bytes) -> None:
    try:
        load(text)
    except DocumentError:
        pass


def test_a_python_built_manifest_with_a_name_twice_is_refused_by_compile():
    """Files are checked when read; a manifest built in Python is checked by compile_plan (for
    free: the plan has fewer names than the manifest), so no quantizer is dropped silently."""
    import qconfig
    from qconfig.attributes import QuantizerAttributeConfig
    from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

    def linear(name: str, *attributes: str) -> ModuleSite:
        defaults = QuantizerAttributeConfig()
        sites = [QuantizerSite(attribute=a, defaults=defaults) for a in attributes]
        return ModuleSite(
            name=name, class_name="Linear", registry_key="nn.Linear", quantizers=sites
        )

    config = qconfig.load_config({"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": 8}}]})
    for modules in (
        [linear("fc", "weight_quantizer"), linear("fc", "weight_quantizer")],
        [linear("fc", "weight_quantizer", "weight_quantizer")],
        [linear("blk", "x.wq"), linear("blk.x", "wq")],
    ):
        manifest = Manifest(model="m", registry_keys=["nn.Linear"], modules=modules)
        with pytest.raises(DocumentError, match="already used") as caught:
            qconfig.compile_plan(config, manifest)
        assert caught.value.path[:1] == ("modules",)
    fine = Manifest(
        model="m", registry_keys=["nn.Linear"], modules=[linear("fc", "weight_quantizer")]
    )
    assert list(qconfig.compile_plan(config, fine).quantizers) == ["fc.weight_quantizer"]

"""Fuzz: manifests and plans, mutated at the JSON level and as text.

A manifest or plan either reads (and then round-trips, and a manifest compiles, lints and
explains configs like any other) or is a DocumentError with a message; nothing else.
"""

from __future__ import annotations

import json

import pytest
from fuzz_corpus import EXAMPLES_DIR, MANIFESTS, manifest_text, plan_texts
from fuzz_pipeline import check_plan_round_trip, lint_finds_an_error
from fuzz_structures import MANIFEST_KEYS, PLAN_KEYS, manifest_domain, mutated_json, plan_domain
from fuzz_support import check_diagnostic, check_document_error, run_fuzz, watchdog
from fuzz_text import to_json
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

CONFIGS = sorted(str(p) for p in (EXAMPLES_DIR / "configs").glob("*.*"))


@st.composite
def damaged_json(draw: st.DrawFn, text: str) -> str:
    """A JSON text with at most one text-level change: truncated, a duplicate key, a BOM, a
    stray byte."""
    op = draw(st.sampled_from(["none"] * 12 + ["truncate", "duplicate", "bom", "junk"]))
    at = draw(st.integers(0, len(text)))
    if op == "truncate":
        return text[:at]
    if op == "duplicate" and text.startswith("{"):
        key = draw(st.sampled_from(["format", "modules", "quantizers", "states", "model"]))
        return '{"' + key + '": 1, ' + text[1:]
    if op == "bom":
        return "\ufeff" + text
    if op == "junk":
        return (
            text[:at] + draw(st.sampled_from(["\x00", ",", "]", "}", "\ud800", "//"])) + text[at:]
        )
    return text


@st.composite
def manifests(draw: st.DrawFn) -> str:
    tree = json.loads(manifest_text(draw(st.sampled_from(MANIFESTS))))
    tree = draw(mutated_json(tree, manifest_domain, MANIFEST_KEYS))
    return draw(damaged_json(to_json(tree, draw(st.sampled_from([None, 1])))))


def test_manifests(fuzz_long, workspace):
    """A mutated manifest is a DocumentError, or a manifest that round-trips, has unique
    quantizer names, and on which configs compile (or fail to, with lint agreeing), lint and
    explain."""

    def check(args):
        text, config, pick = args
        with watchdog(20.0):
            return _check_manifest(text, config, pick)

    outcomes = run_fuzz(
        "manifests",
        st.tuples(manifests(), st.sampled_from(CONFIGS), st.integers(0, 10**6)),
        check,
        long=fuzz_long,
    )
    assert outcomes["compiled"] >= outcomes.total() // 20, outcomes
    assert outcomes["rejected"] >= outcomes.total() // 10, outcomes


def _check_manifest(text: str, config_path: str, pick: int) -> str:
    import qconfig
    from qconfig.compile import CompileError
    from qconfig.errors import DocumentError
    from qconfig.manifest import Manifest

    try:
        manifest = Manifest.from_json(text)
    except DocumentError as exc:
        check_document_error(exc)
        return "rejected"
    assert Manifest.from_json(manifest.to_json()) == manifest, "manifest does not round-trip"
    names = manifest.quantizer_names()
    assert len(names) == len(set(names)), "a manifest with duplicate quantizer names was read"
    config = qconfig.load_config(config_path)
    try:
        plan = qconfig.compile_plan(config, manifest)
    except CompileError:
        lint_finds_an_error(config_path, manifest)
        return "rejected-compile"
    check_plan_round_trip(plan)
    assert list(plan.quantizers) == names, "the plan does not have the manifest's quantizers"
    for d in qconfig.lint(config_path, manifest):
        check_diagnostic(d)
    if names:
        str(qconfig.explain(config, manifest, names[pick % len(names)]))
    return "compiled"


@st.composite
def plans(draw: st.DrawFn) -> str:
    tree = json.loads(draw(st.sampled_from(plan_texts())))
    if draw(st.booleans()):  # v1 has no specs: edits of attribute sets get past the spec check
        tree["format"] = "qconfig.plan/v1"
        del tree["specs"]
    tree = draw(mutated_json(tree, plan_domain, PLAN_KEYS))
    return draw(damaged_json(to_json(tree, draw(st.sampled_from([None, 1])))))


def test_plans(fuzz_long, workspace):
    """A mutated plan is a DocumentError, or a plan that writes strict JSON and reads back
    equal."""
    from qconfig.errors import DocumentError
    from qconfig.plan import Plan

    def check(text):
        with watchdog(20.0):
            try:
                plan = Plan.from_json(text)
            except DocumentError as exc:
                check_document_error(exc)
                return "rejected"
            check_plan_round_trip(plan)
            plan.summary()
            return "read"

    outcomes = run_fuzz("plans", plans(), check, long=fuzz_long)
    assert outcomes["read"] >= outcomes.total() // 20, outcomes  # past the JSON checks
    assert outcomes["rejected"] >= outcomes.total() // 10, outcomes

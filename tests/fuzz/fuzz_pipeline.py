"""The qconfig pipeline every generated config goes through, with its properties.

``load_config → compile_plan → Plan.to_json → Plan.from_json (equal) → lint → explain``
against an example manifest. The properties, beyond "no exception but the documented ones":

* a ConfigError's diagnostics have codes and messages, and a line when there was text;
* lint agrees with the loader and the compiler: what fails to load or compile is a lint error,
  what loads is never a load error in lint, and an error lint finds in the config alone is
  still an error with a manifest (a model cannot make a wrong config right);
* the plan JSON is strict JSON and reads back to an equal plan that writes the same text;
* explain works on the compiled quantizers.
"""

from __future__ import annotations

import os
from typing import Any

import fuzz_corpus
from fuzz_support import check_config_error, check_diagnostic, check_document_error, strict_json

#: Diagnostic codes of the loader (docs/errors.md): syntax, duplicate key, validation, import,
#: I/O, document shape.
LOAD_CODES = {"QC001", "QC002", "QC003", "QC004", "QC005", "QC006"}
_SUFFIXES = (".yml", ".yaml", ".json")


def read_as_path(text: str) -> bool:
    """Whether ``load_config(text)`` takes ``text`` for a file name (a single line ending in a
    config suffix, or naming an existing file), so that its errors have no line in ``text``."""
    try:
        return "\n" not in text and (text.endswith(_SUFFIXES) or os.path.isfile(text))
    except ValueError:
        return False


def config_pipeline(src: Any, manifest_name: str, pick: int = 0, *, located: bool) -> str:
    """Run ``src`` (text, path or mapping) through the pipeline; returns the outcome."""
    import qconfig
    from qconfig.compile import CompileError
    from qconfig.errors import ConfigError
    from qconfig.fileio import InputFileError

    manifest = fuzz_corpus.manifest(manifest_name)
    try:
        config = qconfig.load_config(src)
    except ConfigError as exc:
        check_config_error(exc, located=located)
        if is_snippet_error(exc):
            return "snippet"  # a valid unit file: lint checks it as one, without errors
        lint_finds_an_error(src, manifest)
        return "rejected-load"
    except InputFileError as exc:
        check_document_error(exc)
        return "rejected-file"
    try:
        plan = qconfig.compile_plan(config, manifest)
    except CompileError as exc:
        check_config_error(exc, located=False)
        lint_finds_an_error(src, manifest)
        return "rejected-compile"
    check_plan_round_trip(plan)
    found = qconfig.lint(src, manifest)
    for d in found:
        check_diagnostic(d)
        assert d.code not in LOAD_CODES, f"loads, but lint reports a load error: {d}"
    alone = [d for d in qconfig.lint(src) if d.severity == "error"]
    assert not alone or any(d.severity == "error" for d in found), (
        f"lint without a manifest finds {alone[0]}, with one no error at all"
    )
    check_explain(config, manifest, plan, pick)
    return "compiled"


def is_snippet_error(exc: Any) -> bool:
    """load_config's refusal of a snippet file (a unit list, a numerics block): not an error
    of the file, which lint validates as the snippet it declares."""
    return [d.code for d in exc.diagnostics] == ["QC006"] and "snippet" in str(exc)


def lint_finds_an_error(src: Any, manifest: Any) -> None:
    """What does not load or compile must be a lint error (lint is the pre-commit check)."""
    import qconfig
    from qconfig.fileio import InputFileError

    try:
        found = qconfig.lint(src, manifest)
    except InputFileError as exc:
        check_document_error(exc)
        return
    for d in found:
        check_diagnostic(d)
    assert any(d.severity == "error" for d in found), (
        f"load or compile failed but lint found no error: {[str(d) for d in found]}"
    )


def check_plan_round_trip(plan: Any) -> None:
    """The plan's JSON is strict JSON and reads back equal, byte for byte on re-writing."""
    from qconfig.plan import Plan

    text = plan.to_json()
    strict_json(text)
    back = Plan.from_json(text)
    assert back == plan, "Plan.from_json(plan.to_json()) differs from the plan"
    assert back.to_json() == text, "a plan read back writes different JSON"


def check_explain(config: Any, manifest: Any, plan: Any, pick: int) -> None:
    """Explain a drawn quantizer and the first one; the explanation must render."""
    import qconfig

    names = list(plan.quantizers)
    if not names:
        return
    for name in {names[0], names[pick % len(names)]}:
        explanation = qconfig.explain(config, manifest, name)
        assert explanation.final_enable == plan.quantizers[name].enable, name
        str(explanation)

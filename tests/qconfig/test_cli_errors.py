"""The ``qconfig`` command's error contract (docs/errors.md): every outcome is a documented exit
status with a short message, never a traceback or a hang.

* 2 — an input that cannot be read (missing, a directory, a FIFO, a device, not UTF-8) or a
  manifest that is not a manifest, whichever command reads it, as one ``qconfig: error:`` line;
* 3 — an exception nobody expected: one line, the traceback only with ``--traceback``;
* docs/errors.md names every diagnostic code and exception class the source defines.

Inputs that could block (a FIFO, ``/dev/zero``) run under a deadline, so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qconfig.cli import main
from qconfig.cli.common import UsageError, load_manifest
from qconfig.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "configs" / "int8_default.yaml"
LLAMA = ROOT / "examples" / "manifests" / "llama_decoder.json"
QUANTIZER = "model.layers.0.mlp.down_proj.weight_quantizer"
INTERNAL = re.compile(
    r"^qconfig: internal error: RuntimeError: boom \[\.\.\.\] "
    r"\(rerun with --traceback for the full traceback\)$"
)

LEGACY = 'quant_cfg:\n  default: {enable: false}\n  "*weight_quantizer": {num_bits: 8, axis: 0}\n'
NOT_UTF8 = b'quant_cfg:\n  - quantizer_name: "\xff*"\n    enable: false\n'


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail (instead of hanging for ever) when the body takes longer than ``seconds``."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: a blocking read?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with deadline(60):
        status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# -- internal errors: exit 3, one line, the traceback on request ---------------------------------


def _boom(args):
    raise RuntimeError("boom\nwith a second line nobody needs")


def test_an_internal_error_is_one_line_and_exit_3(capsys, monkeypatch):
    monkeypatch.setattr("qconfig.cli.presets.run", _boom)
    status, out, err = run_cli(["presets"], capsys)
    assert status == 3
    assert out == ""
    assert len(err.splitlines()) == 1 and INTERNAL.match(err.rstrip("\n")), err


@pytest.mark.parametrize(
    "argv",
    [
        ["--traceback", "presets"],
        ["presets", "--traceback"],
        ["presets", "INT8_DEFAULT_CFG", "--traceback", "--format", "json"],
    ],
    ids=["before", "after", "among-options"],
)
def test_traceback_flag_before_or_after_the_command(argv, capsys, monkeypatch):
    monkeypatch.setattr("qconfig.cli.presets.run", _boom)
    status, _, err = run_cli(argv, capsys)
    assert status == 3
    assert err.startswith("Traceback (most recent call last):"), err
    assert "in _boom" in err and "RuntimeError: boom\nwith a second line" in err
    assert err.splitlines()[-1] == "qconfig: internal error: RuntimeError: boom [...]"


def test_an_internal_error_in_the_installed_command_is_one_line(tmp_path):
    """The real process: nothing but the one line on stderr, exit status 3."""
    code = (
        "import sys, qconfig.cli.presets as p\n"
        "def boom(args):\n"
        "    raise RuntimeError('boom\\nsecond line')\n"
        "p.run = boom\n"
        "from qconfig.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "presets"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3
    assert INTERNAL.match(proc.stderr.rstrip("\n")) and proc.stderr.count("\n") == 1, proc.stderr


VALID_ARGVS = [
    ["lint", "a.yaml", "b.yaml", "--strict", "--manifest", "m.json", "--format", "json"],
    ["plan", "c.yaml", "--manifest", "m.json", "-o", "p.json", "--summary"],
    ["explain", "c.yaml", "--manifest", "m.json", QUANTIZER],
    ["migrate", "--write", "a.yaml"],
    ["schema", "--kind", "plan", "--check", "-o", "s.json"],
    ["presets", "INT8_DEFAULT_CFG", "--format", "json"],
]


@settings(max_examples=150, deadline=None)
@given(argv=st.sampled_from(VALID_ARGVS), data=st.data())
def test_traceback_anywhere_parses_as_without_it(argv, data):
    """``--traceback`` may stand anywhere before ``--``: the command line means the same."""
    from qconfig.cli import take_traceback_flag

    positions = st.lists(st.integers(0, len(argv)), min_size=1, max_size=3)
    with_flag = list(argv)
    for index in sorted(data.draw(positions), reverse=True):
        with_flag.insert(index, "--traceback")
    stripped, flag = take_traceback_flag(with_flag)
    assert flag and stripped == argv
    assert build_parser(stripped[0]).parse_args(stripped) == build_parser().parse_args(argv)
    assert take_traceback_flag(argv) == (argv, False)


def test_traceback_after_double_dash_is_a_file_name():
    from qconfig.cli import take_traceback_flag

    assert take_traceback_flag(["migrate", "--", "--traceback"]) == (
        ["migrate", "--", "--traceback"],
        False,
    )


@pytest.mark.parametrize(
    ("raised", "status", "expected"),
    [
        (OSError(28, "No space left on device"), 2, "qconfig: error: [Errno 28] No space left"),
        (UsageError("x.yaml: no such file"), 2, "qconfig: error: x.yaml: no such file"),
        (MemoryError(), 3, "qconfig: internal error: MemoryError (rerun with --traceback"),
        (RecursionError("maximum recursion depth exceeded"), 3, "internal error: RecursionError"),
    ],
    ids=["oserror", "usage", "memory", "recursion"],
)
def test_every_exception_maps_to_a_documented_status(raised, status, expected, capsys, monkeypatch):
    def fail(args):
        raise raised

    monkeypatch.setattr("qconfig.cli.presets.run", fail)
    got, _, err = run_cli(["presets"], capsys)
    assert got == status and expected in err and len(err.splitlines()) == 1, err


def test_a_config_error_that_escapes_a_command_is_printed_located(capsys, monkeypatch):
    from qconfig.diagnostic import Diagnostic
    from qconfig.errors import ConfigError

    def fail(code):
        def run(args):
            raise ConfigError([Diagnostic(code, "error", "bad", "c.yaml", 3, 7, "quant_cfg[0]")])

        return run

    monkeypatch.setattr("qconfig.cli.presets.run", fail("QC003"))
    assert run_cli(["presets"], capsys)[1:] == ("", "c.yaml:3:7: QC003 bad (quant_cfg[0])\n")
    monkeypatch.setattr("qconfig.cli.presets.run", fail("QC005"))
    assert run_cli(["presets"], capsys)[0] == 2  # a file that cannot be read: I/O


# -- inputs that cannot be read: exit 2, one line, no hang ---------------------------------------


def _make(kind: str, tmp_path: Path) -> str:
    """A path of the given kind of unreadable input."""
    if kind in ("/dev/zero", "/dev/urandom"):
        return kind
    path = tmp_path / f"input-{kind}.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "not-utf8":
        path.write_bytes(NOT_UTF8)
    elif kind == "unsearchable":
        locked = tmp_path / "locked"
        locked.mkdir()
        path = locked / "config.yaml"
        path.write_text(LEGACY, encoding="utf-8")
        locked.chmod(0)
    return str(path)


SPECIAL = ["missing", "directory", "fifo", "/dev/zero", "/dev/urandom", "unsearchable"]
COMMANDS = {
    "lint": lambda f: ["lint", f],
    "plan": lambda f: ["plan", f, "--manifest", LLAMA],
    "explain": lambda f: ["explain", f, "--manifest", LLAMA, QUANTIZER],
    "migrate": lambda f: ["migrate", f],
    "migrate-write": lambda f: ["migrate", "--write", f],
    "lint-manifest": lambda f: ["lint", CONFIG, "--manifest", f],
    "plan-manifest": lambda f: ["plan", CONFIG, "--manifest", f],
    "explain-manifest": lambda f: ["explain", CONFIG, "--manifest", f, QUANTIZER],
}


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _run_as_nobody(argv: list[str], tmp_path: Path) -> tuple[int, str, str]:
    """The CLI in a subprocess as user ``nobody``: root may read any file, so permissions are
    only tested for real by an unprivileged process (the tree up to tmp_path must be
    searchable by it)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("running as root without setpriv: cannot test permission errors")
    for part in (tmp_path, *tmp_path.parents):
        if part == Path(tempfile.gettempdir()) or part == part.parent:
            break
        part.chmod(part.stat().st_mode | 0o755)
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, sys.executable, "-m", "qconfig.cli", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("kind", SPECIAL)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_unreadable_input_is_one_line_and_exit_2(command, kind, tmp_path, capsys):
    file = _make(kind, tmp_path)
    try:
        if kind == "unsearchable" and _as_root():
            status, out, err = _run_as_nobody(COMMANDS[command](file), tmp_path)
        else:
            status, out, err = run_cli(COMMANDS[command](file), capsys)
    finally:
        if kind == "unsearchable":
            (tmp_path / "locked").chmod(0o700)
    assert status == 2, (status, err)
    assert err.startswith(f"qconfig: error: {file}: ") and err.count("\n") == 1, err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "directory"])
def test_schema_check_of_a_special_file_is_exit_2(kind, tmp_path, capsys):
    file = _make(kind, tmp_path)
    status, _, err = run_cli(["schema", "--check", "-o", file], capsys)
    assert status == 2 and err.startswith(f"qconfig: error: {file}: "), err


def test_schema_over_a_file_that_is_not_utf8(tmp_path, capsys):
    """Not UTF-8 is simply not the schema: stale for --check, and overwritten without it."""
    from qconfig.schema import render

    target = tmp_path / "schema.json"
    target.write_bytes(b"\xff\xfe not a schema")
    assert run_cli(["schema", "--check", "-o", target], capsys)[0] == 1
    assert run_cli(["schema", "-o", target], capsys)[0] == 0
    assert target.read_text(encoding="utf-8") == render("config")
    assert run_cli(["schema", "--check", "-o", target], capsys)[0] == 0


@pytest.mark.parametrize("command", ["plan", "explain"])
def test_a_config_that_is_not_utf8_is_an_io_error(command, tmp_path, capsys):
    file = _make("not-utf8", tmp_path)
    status, _, err = run_cli(COMMANDS[command](file), capsys)
    assert status == 2, err
    assert "QC005" in err and "Traceback" not in err
    assert all(line.startswith(file) for line in err.splitlines()), err


def test_lint_of_a_config_or_import_that_is_not_utf8_is_an_io_error(tmp_path, capsys):
    """Lint reports the unreadable file where it is named (QC005) and exits 2, not 1: an input
    that cannot be read is an I/O problem, not a finding in the config."""
    file = _make("not-utf8", tmp_path)
    status, out, _ = run_cli(["lint", file], capsys)
    assert status == 2 and f"{file}:2:22: QC005" in out, out
    importer = tmp_path / "importer.yaml"
    importer.write_text(f"imports:\n  bad: {file}\nquant_cfg:\n  - $import: bad\n", "utf-8")
    status, out, _ = run_cli(["lint", str(importer)], capsys)
    assert status == 2 and f"{importer}:2:" in out and "QC005" in out, out


@pytest.mark.parametrize("write", [False, True])
def test_migrate_of_a_file_that_is_not_utf8_is_one_located_line(write, tmp_path, capsys):
    file = _make("not-utf8", tmp_path)
    status, out, err = run_cli(["migrate", *(["--write"] if write else []), file], capsys)
    assert status == 2 and out == ""
    assert re.fullmatch(rf"qconfig: error: {re.escape(file)}: line 2, column 22: .*UTF-8.*\n", err)
    assert Path(file).read_bytes() == NOT_UTF8


def test_migrate_goes_on_after_an_unreadable_file(tmp_path, capsys):
    good = tmp_path / "legacy.yaml"
    good.write_text(LEGACY, encoding="utf-8")
    fifo = _make("fifo", tmp_path)
    status, _, err = run_cli(["migrate", "--write", fifo, good], capsys)
    assert status == 2
    assert "quantizer_name" in good.read_text(encoding="utf-8")  # the other file was migrated
    assert f"qconfig: error: {fifo}: is a FIFO" in err


# -- manifests that are not manifests: exit 2, one line with the place ---------------------------


def _plan_json() -> str:
    from qconfig.compile import compile_plan
    from qconfig.loader import load_config
    from qconfig.manifest import Manifest

    return compile_plan(load_config(CONFIG), Manifest.load(LLAMA)).to_json()


NOT_MANIFESTS = {
    "syntax": lambda: "{not json",
    "list": lambda: "[1, 2]",
    "string": lambda: '"a manifest"',
    "empty": lambda: "",
    "plan": _plan_json,
    "modules-5": lambda: json.dumps({"format": "qconfig.manifest/v1", "modules": 5}),
    "quantizers-5": lambda: json.dumps(
        {"format": "qconfig.manifest/v1", "modules": [{"name": "m", "quantizers": 5}]}
    ),
    "deep": lambda: "[" * 1000 + "]" * 1000,
    "bom-and-crlf": lambda: "\ufeff[\r\n1]",
}


@pytest.mark.parametrize("content", sorted(NOT_MANIFESTS))
def test_a_manifest_that_is_not_a_manifest_is_one_line_and_exit_2(content, tmp_path, capsys):
    manifest = tmp_path / "m.json"
    manifest.write_text(NOT_MANIFESTS[content](), encoding="utf-8")
    for argv in (["lint", CONFIG], ["plan", CONFIG], ["explain", CONFIG, QUANTIZER]):
        status, _, err = run_cli([*argv, "--manifest", manifest], capsys)
        assert status == 2, (argv, err)
        assert err.startswith(f"qconfig: error: {manifest}: ") and err.count("\n") == 1, err


def test_a_document_error_names_its_json_path(tmp_path, capsys, monkeypatch):
    from qconfig.errors import DocumentError
    from qconfig.manifest import Manifest

    manifest = tmp_path / "m.json"
    manifest.write_text("{}", encoding="utf-8")

    def load(path, file=None):
        raise DocumentError("expected a list, got 5", file=file, path=("modules", 3, "quantizers"))

    monkeypatch.setattr(Manifest, "load", staticmethod(lambda path: load(path, "from-load")))
    assert run_cli(["lint", CONFIG, "--manifest", manifest], capsys)[1:] == (
        "",
        "qconfig: error: from-load: modules[3].quantizers: expected a list, got 5\n",
    )
    monkeypatch.setattr(Manifest, "load", staticmethod(lambda path: load(path)))
    err = run_cli(["plan", CONFIG, "--manifest", manifest], capsys)[2]
    assert err == f"qconfig: error: {manifest}: modules[3].quantizers: expected a list, got 5\n"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
MANIFEST_KEYS = ["format", "model", "registry_keys", "modules", "name", "class_name", "quantizers"]


@st.composite
def manifest_like(draw) -> str:
    """JSON that looks more or less like a manifest: real keys, values of any type."""
    keys = st.sampled_from(MANIFEST_KEYS) | st.text(max_size=6)
    value = draw(
        st.recursive(JSON, lambda inner: st.dictionaries(keys, inner, max_size=5), max_leaves=15)
    )
    if draw(st.booleans()) and isinstance(value, dict):
        value["format"] = "qconfig.manifest/v1"
    return json.dumps(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=manifest_like())
def test_load_manifest_loads_or_says_why_in_one_line(text):
    """Whatever the JSON, the CLI gets a manifest or a one-line usage error naming the file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_text(text, encoding="utf-8")
        try:
            load_manifest(str(path))
        except UsageError as exc:
            message = str(exc)
            assert message.startswith(f"{path}: ") and "\n" not in message, message


# -- docs/errors.md is complete ------------------------------------------------------------------

SOURCES = sorted((ROOT / "packages").glob("*/src/**/*.py"))
ERRORS_MD = ROOT / "docs" / "errors.md"
LINT_RULES_MD = ROOT / "docs" / "lint-rules.md"
CODE = re.compile(r"\bQC\d{3}\b")


def _codes_in_source() -> dict[str, str]:
    """Every diagnostic code the source mentions, with where it first appears."""
    found: dict[str, str] = {}
    for path in SOURCES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for code in CODE.findall(line):
                found.setdefault(code, f"{path.relative_to(ROOT)}:{number}")
    return found


def test_every_diagnostic_code_is_documented():
    """A code a user can meet is explained in docs/errors.md or has its section in
    docs/lint-rules.md (``## QCnnn``)."""
    documented = set(CODE.findall(ERRORS_MD.read_text(encoding="utf-8")))
    documented |= set(re.findall(r"^## (QC\d{3})\b", LINT_RULES_MD.read_text("utf-8"), re.M))
    missing = {c: where for c, where in sorted(_codes_in_source().items()) if c not in documented}
    assert len(_codes_in_source()) >= 20  # the scan finds the codes at all
    assert not missing, "codes missing from docs/errors.md and docs/lint-rules.md:\n" + "\n".join(
        f"  {code} (first seen at {where})" for code, where in missing.items()
    )


def test_docs_errors_lists_no_code_the_source_does_not_have():
    stale = set(CODE.findall(ERRORS_MD.read_text(encoding="utf-8"))) - set(_codes_in_source())
    assert not stale, f"docs/errors.md documents codes that no longer exist: {sorted(stale)}"


def _exception_classes() -> dict[str, str]:
    """Every exception (or warning) class defined in packages/*/src, with its place.

    A class is one when a base is a built-in exception or another such class (by name, to a
    fixed point). Private classes (``_Name``) are left out: they are control flow inside one
    module and never reach a caller.
    """
    known = {
        n for n, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)
    }
    classes: list[tuple[str, set[str], str]] = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                }
                classes.append((node.name, bases, f"{path.relative_to(ROOT)}:{node.lineno}"))
    found: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, bases, where in classes:
            if name not in found and bases & (known | set(found)):
                found[name] = where
                changed = True
    return {n: w for n, w in found.items() if not n.startswith("_")}


def test_every_exception_class_is_documented():
    text = ERRORS_MD.read_text(encoding="utf-8")
    classes = _exception_classes()
    assert {"ConfigError", "DocumentError", "PlanMismatchError"} <= set(classes)
    missing = {n: w for n, w in sorted(classes.items()) if not re.search(rf"\b{n}\b", text)}
    assert not missing, "exception classes missing from docs/errors.md:\n" + "\n".join(
        f"  {name} (defined at {where})" for name, where in missing.items()
    )


def test_docs_errors_states_the_exit_statuses_the_cli_uses():
    from qconfig.cli import common

    text = ERRORS_MD.read_text(encoding="utf-8")
    for name in ("EXIT_OK", "EXIT_FINDINGS", "EXIT_USAGE", "EXIT_INTERNAL"):
        assert re.search(rf"^\| `{getattr(common, name)}` \|", text, re.M), name
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/errors.md)" in readme


def test_readme_and_help_agree_on_internal_errors(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "3 internal error" in help_text and "--traceback" in help_text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`3` an internal error" in readme

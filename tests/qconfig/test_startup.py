"""What `qconfig lint one.yaml` leaves out at start-up stays out, and leaving it out changes
nothing the user sees (docs/performance.md, "Start-up"; bench/bench_lint.py measures the cost).
"""

import contextlib
import io
import subprocess
import sys

import pytest
from qconfig.cli.parser import build_parser

ARGVS = [
    ["lint", "a.yaml", "--strict", "--format", "json"],
    ["lint", "a.yaml", "b.yaml", "--no-strict", "--show-info", "--manifest", "m.json"],
    ["lint"],
    ["lint", "--help"],
    ["lint", "a.yaml", "--version"],
    ["lint", "a.yaml", "--format", "xml"],
    ["schema", "--kind", "plan", "--check"],
    ["plan", "c.yaml", "--manifest", "m.json", "--summary"],
    ["explain", "c.yaml", "--manifest", "m.json"],
    ["presets", "--format", "json"],
    ["migrate", "--write"],
]


def _outcome(parser, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result = vars(parser.parse_args(argv))
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("argv", ARGVS, ids=" ".join)
def test_the_one_command_parser_parses_as_the_full_one(argv, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert _outcome(build_parser(argv[0]), argv) == _outcome(build_parser(), argv)


def test_help_width_is_argparse_default(monkeypatch):
    import argparse

    monkeypatch.setenv("COLUMNS", "57")
    ours = build_parser().format_help()
    monkeypatch.setattr("qconfig.cli.parser.HelpFormatter", argparse.HelpFormatter)
    assert build_parser().format_help() == ours


def test_lint_of_a_clean_file_imports_only_what_it_needs(tmp_path):
    import shutil

    from qconfig import presets

    shutil.copy(presets.path("INT8_DEFAULT_CFG"), tmp_path / "ok.yaml")  # as bench_lint.py
    code = (
        "import sys\n"
        "from qconfig.cli import main\n"
        "assert main(['lint', 'ok.yaml']) == 0\n"
        "print(sorted(m for m in ('qconfig.spec', 'qconfig.compile', 'qconfig.matching', "
        "'qconfig.algorithm_methods', 'qconfig.compress', 'qconfig.diagnostic', 'shutil') "
        "if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]", proc.stdout


def test_diagnostics_still_come_from_qconfig_errors():
    import qconfig
    from qconfig.diagnostic import Diagnostic
    from qconfig.errors import Diagnostic as Reexported

    assert Reexported is Diagnostic is qconfig.Diagnostic
    from qconfig.quantize import CompressConfig

    assert CompressConfig is qconfig.CompressConfig

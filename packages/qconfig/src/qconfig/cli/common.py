"""What every command shares: exit codes, usage errors, diagnostics output, loading inputs.

Nothing heavy is imported here at module level: the loader, the models and the compiler are
imported by the function that needs them, so a command pays only for what it uses.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic
    from qconfig.manifest import Manifest


#: Exit statuses of every command (docs/errors.md, "Exit statuses").
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3

#: The loader's code for a file that cannot be read (qconfig.loader.locations.IO_ERROR).
IO_ERROR_CODE = "QC005"


class UsageError(Exception):
    """A problem with the command line or an input file: exit status 2."""


class Reported(Exception):
    """The problem was already printed (located diagnostics): ``main`` exits with ``status``.

    Why an exception: the helpers that load and compile print what went wrong where it is
    known, and the command then has nothing left to do but stop with the right status.
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def status_for(diagnostics: list[Diagnostic]) -> int:
    """Exit status of a config that did not load: 2 when a file could not be read (QC005, an
    I/O error like any other), else 1 (findings in the config)."""
    return EXIT_USAGE if any(d.code == IO_ERROR_CODE for d in diagnostics) else EXIT_FINDINGS


def use_color(stream: TextIO, mode: str) -> bool:
    """Colour only for a person at a terminal (https://no-color.org: NO_COLOR disables it)."""
    if mode != "auto":
        return mode == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


_COLORS = {"error": "31", "warning": "33", "info": "36", "bold": "1", "dim": "2"}


def paint(text: str, style: str, color: bool) -> str:
    return f"\x1b[{_COLORS[style]}m{text}\x1b[0m" if color else text


def format_text(d: Diagnostic, color: bool) -> str:
    where = f" ({d.path})" if d.path else ""
    return (
        f"{paint(d.location(), 'bold', color)}: {paint(d.code, d.severity, color)} "
        f"{d.message}{paint(where, 'dim', color) if where else ''}"
    )


def github_escape(text: str, *, prop: bool = False) -> str:
    """Workflow-command escaping (actions/toolkit ``escapeData`` / ``escapeProperty``)."""
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def format_github(d: Diagnostic) -> str:
    level = {"error": "error", "warning": "warning"}.get(d.severity, "notice")
    props = [f"file={github_escape(d.file or '', prop=True)}"]
    if d.line is not None:
        props.append(f"line={d.line}")
        if d.column is not None:
            props.append(f"col={d.column}")
    props.append(f"title={github_escape(d.code, prop=True)}")
    where = f" ({d.path})" if d.path else ""
    return f"::{level} {','.join(props)}::{github_escape(d.message + where)}"


def plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else plural or word + 's'}"


def report_error(message: str) -> None:
    print(f"qconfig: error: {message}", file=sys.stderr)


def readable(path: str) -> Path:
    """The path of an input file, or UsageError (exit 2) saying why it cannot be read.

    Only a regular file passes: a FIFO, ``/dev/zero`` or ``/dev/urandom`` would block or never
    end when read, so they are refused here, without reading (the open is non-blocking, which a
    FIFO without a writer would otherwise hang in). Messages are :mod:`qconfig.fileio`'s.
    """
    from qconfig.fileio import InputFileError, check_regular_file

    try:
        check_regular_file(path)
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    return Path(path)


def document_error_message(exc: Exception, file: str) -> str:
    """One line for a manifest or plan that is not one: ``<file>: <json path>: <what>``.

    A :class:`qconfig.errors.DocumentError` knows its JSON path; other ``ValueError``s (JSON
    syntax, a pydantic validation error) are reduced to their first line.
    """
    from qconfig.errors import DocumentError, format_path

    if isinstance(exc, DocumentError):
        where = [exc.file or file] + ([format_path(exc.path)] if exc.path else [])
        return f"{': '.join(where)}: {one_line(exc.message)}"
    return f"{file}: not a qconfig manifest ({one_line(str(exc)) or type(exc).__name__})"


def one_line(text: str) -> str:
    """The first non-empty line of ``text``, with `` [...]`` when more lines followed."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[0] + (" [...]" if len(lines) > 1 else "")


TRACEBACK_FLAG = "--traceback"


def take_traceback_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--traceback``, and whether it was there.

    Why by hand: argparse only knows an option on the parser it belongs to, and this one is
    accepted before or after the subcommand (``qconfig --traceback plan ...`` and ``qconfig
    plan ... --traceback``; the ``qruntime`` command too). Everything after ``--`` is left
    alone (it may be a file name).
    """
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    kept = [a for a in argv[:end] if a != TRACEBACK_FLAG]
    return kept + argv[end:], len(kept) < end


def report_internal_error(program: str, exc: BaseException, show_traceback: bool) -> int:
    """An exception nobody expected (a bug): one line on stderr, or the traceback and then that
    line with ``--traceback``; exit status 3. Shared by ``qconfig`` and ``qruntime``."""
    message = one_line(str(exc))
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if show_traceback:
        import traceback

        traceback.print_exception(exc)
        print(f"{program}: internal error: {what}", file=sys.stderr)
    else:
        print(
            f"{program}: internal error: {what} (rerun with {TRACEBACK_FLAG} for the full "
            "traceback)",
            file=sys.stderr,
        )
    return EXIT_INTERNAL


def load_manifest(path: str) -> Manifest:
    """A manifest that does not load is an input error (2), not a finding in the config."""
    from qconfig.fileio import InputFileError
    from qconfig.manifest import Manifest

    p = readable(path)
    try:
        return Manifest.load(p)
    except InputFileError as exc:
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # JSON syntax, DocumentError, model validation
        raise UsageError(document_error_message(exc, path)) from None


def print_diagnostics(diagnostics: list[Diagnostic], fallback_file: str) -> None:
    from dataclasses import replace

    color = use_color(sys.stderr, "auto")
    for d in diagnostics:
        if d.file is None:
            d = replace(d, file=fallback_file)
        print(format_text(d, color), file=sys.stderr)


def load_config_or_report(path: str) -> Any:
    """The validated config; else its located errors are printed and :class:`Reported` is
    raised with exit status 1 (or 2 when a file could not be read, see :func:`status_for`)."""
    import warnings

    from qconfig.errors import ConfigError
    from qconfig.loader import load_config

    p = readable(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # lint reports legacy forms
            return load_config(p)
    except ConfigError as exc:
        print_diagnostics(exc.diagnostics, path)
        raise Reported(status_for(exc.diagnostics)) from None


def weight_check_from_env() -> bool:
    """Model Optimizer's switch: ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1`` skips the weight check.

    Read at the command line only; the compiler takes it as an argument, so library calls never
    depend on the environment they happen to run in.
    """
    return os.environ.get("MODELOPT_SKIP_WEIGHT_QUANT_CHECK") != "1"


def compile_or_report(path: str, config: Any, manifest: Manifest) -> Any:
    """The plan; else the compile errors are printed at their place in the file and
    :class:`Reported` is raised (exit 1)."""
    from qconfig.compile import CompileError, compile_plan

    weight_check = weight_check_from_env()
    try:
        return compile_plan(config, manifest, weight_check=weight_check)
    except CompileError as exc:
        import warnings

        from qconfig.lint import lint

        # lint maps normalized entry indices back to the file's lines and columns
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            found = lint(Path(path), manifest, weight_check=weight_check)
            located = [d for d in found if d.severity == "error"]
        print_diagnostics(located or exc.diagnostics, path)
        raise Reported(EXIT_FINDINGS) from None


def compile_inputs(config_path: str, manifest_path: str) -> tuple[Manifest, Any, Any]:
    """``(manifest, config, plan)`` for the commands that compile (plan, explain); raises
    :class:`Reported` after printing the config's load or compile errors, and
    :class:`UsageError` for an input that cannot be read."""
    manifest = load_manifest(manifest_path)
    config = load_config_or_report(config_path)
    plan = compile_or_report(config_path, config, manifest)
    return manifest, config, plan

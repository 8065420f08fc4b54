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


EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A problem with the command line or an input file: exit status 2."""


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
    """The path of an input file, or UsageError (exit 2) saying why it cannot be read."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{path}: no such file")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return p


def load_manifest(path: str) -> Manifest:
    """A manifest that does not load is an input error (2), not a finding in the config."""
    from qconfig.manifest import Manifest

    p = readable(path)
    try:
        return Manifest.load(p)
    except (ValueError, OSError) as exc:  # JSON syntax or model validation
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: not a qconfig manifest ({first})") from None


def print_diagnostics(diagnostics: list[Diagnostic], fallback_file: str) -> None:
    from dataclasses import replace

    color = use_color(sys.stderr, "auto")
    for d in diagnostics:
        if d.file is None:
            d = replace(d, file=fallback_file)
        print(format_text(d, color), file=sys.stderr)


def load_config_or_report(path: str) -> Any:
    """The validated config, or None after printing its located errors (exit 1)."""
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
        return None


def weight_check_from_env() -> bool:
    """Model Optimizer's switch: ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1`` skips the weight check.

    Read at the command line only; the compiler takes it as an argument, so library calls never
    depend on the environment they happen to run in.
    """
    return os.environ.get("MODELOPT_SKIP_WEIGHT_QUANT_CHECK") != "1"


def compile_or_report(path: str, config: Any, manifest: Manifest) -> Any:
    """The plan, or None after printing the compile errors at their place in the file."""
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
        return None


def compile_inputs(config_path: str, manifest_path: str) -> tuple[Manifest, Any, Any] | None:
    """``(manifest, config, plan)`` for the commands that compile (plan, explain), or None after
    the config's load or compile errors were printed (exit 1)."""
    manifest = load_manifest(manifest_path)
    config = load_config_or_report(config_path)
    if config is None:
        return None
    plan = compile_or_report(config_path, config, manifest)
    if plan is None:
        return None
    return manifest, config, plan

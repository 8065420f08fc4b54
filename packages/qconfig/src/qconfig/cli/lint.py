"""``qconfig lint``: check configs, print ruff-style findings, exit 1 on errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic

from qconfig.cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    IO_ERROR_CODE,
    UsageError,
    format_github,
    format_text,
    load_manifest,
    plural,
    readable,
    report_error,
    use_color,
    weight_check_from_env,
)


def _looks_like_config(path: Path) -> bool:
    """Is this YAML/JSON file a quantization config (for hooks that see every such file)?

    Decided by :func:`qconfig.loader.sniff.looks_like_config` from the file's YAML events, never
    by loading it: an unrelated file with an alias bomb must cost nothing to skip.
    """
    from qconfig.loader.sniff import looks_like_config

    return looks_like_config(path)


def run(args: argparse.Namespace) -> int:
    import warnings
    from dataclasses import replace

    manifest = load_manifest(args.manifest) if args.manifest else None
    weight_check = weight_check_from_env()
    from qconfig.lint import lint

    found: list[Diagnostic] = []
    unreadable = 0
    checked = 0
    hidden = 0
    for file in args.files:
        try:
            path = readable(file)
        except UsageError as exc:
            report_error(str(exc))
            unreadable += 1
            continue
        if args.skip_non_configs and not _looks_like_config(path):
            continue
        checked += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # QC201 reports legacy forms
            diagnostics = lint(path, manifest, weight_check=weight_check)
        here = [d if d.file is not None else replace(d, file=file) for d in diagnostics]
        if not args.show_info:
            hidden += sum(d.severity == "info" for d in here)
            here = [d for d in here if d.severity != "info"]
        # the file's own findings first, then those located in files it imports
        here.sort(key=lambda d: (d.file != file, d.file or "", d.line or 0, d.column or 0))
        found += here

    errors = sum(d.severity == "error" for d in found)
    n_warnings = sum(d.severity == "warning" for d in found)
    if args.format == "json":
        import json

        print(json.dumps([d.to_dict() for d in found], indent=2))
    elif args.format == "github":
        for d in found:
            print(format_github(d))
    else:
        color = use_color(sys.stdout, args.color)
        for d in found:
            print(format_text(d, color))
        counts = [plural(errors, "error")] if errors else []
        counts += [plural(n_warnings, "warning")] if n_warnings else []
        notes = len(found) - errors - n_warnings
        counts += [plural(notes, "note")] if notes else []
        extra = f"; {plural(hidden, 'note')} hidden (--show-info)" if hidden else ""
        if counts:
            listed = ", ".join(counts[:-1]) + (" and " if len(counts) > 1 else "") + counts[-1]
            strict_note = not errors and n_warnings and not args.strict
            tail = "; warnings fail with --strict" if strict_note else ""
            print(f"Found {listed} in {plural(checked, 'file')}{extra}{tail}.")
        elif checked:
            print(f"All checks passed ({plural(checked, 'file')}{extra}).")
    if unreadable or any(d.code == IO_ERROR_CODE for d in found):
        return EXIT_USAGE  # a file (or an import) that cannot be read is an I/O error
    if errors or (args.strict and n_warnings):
        return EXIT_FINDINGS
    return EXIT_OK

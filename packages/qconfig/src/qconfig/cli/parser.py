"""The argument parser: every command and option, without importing any command's code.

The subcommand's name is its module (``lint`` → :mod:`qconfig.cli.lint`), which ``main`` imports
only once the command line is parsed, so ``qconfig --help`` and a usage error stay cheap.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser (public so the docs and tests can introspect the options).

    ``command`` names the one subcommand to define, for a command line that starts with it:
    its options, help and errors are that subcommand's parser alone, so the others are not
    built (each costs ``qconfig lint`` start-up time, docs/performance.md). ``None`` (or a
    name that is not a command) defines them all, for ``qconfig --help`` and usage errors.
    """
    parser = argparse.ArgumentParser(
        prog="qconfig",
        description=(
            "Lint, compile, explain and migrate Model Optimizer 0.47 quantization configs "
            "(no torch needed)."
        ),
        epilog=(
            "Exit status: 0 ok, 1 findings (or a config that does not load), 2 usage or I/O "
            "error, 3 internal error (docs/errors.md)."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qconfig {version()}")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an internal error (exit 3), print the full traceback (also after COMMAND)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, define in _COMMANDS.items():
        if command not in _COMMANDS or name == command:
            define(sub)
    return parser


def _lint(sub: Any) -> None:
    p = sub.add_parser(
        "lint",
        formatter_class=HelpFormatter,
        help="check configs for errors and silent mistakes",
        description=(
            "Check configs: load/validation errors always; with --manifest also what only the "
            "model shows (patterns that match nothing, shadowed entries, block sizes that do "
            "not divide a layer, ...). Exit 1 on errors, and on warnings with --strict."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML/JSON configs or recipes")
    p.add_argument("--manifest", metavar="M", help="model manifest (qconfig.manifest/v1 JSON)")
    p.add_argument("--format", choices=["text", "json", "github"], default="text")
    p.add_argument(
        "--strict",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="warnings fail too (exit 1); --no-strict undoes an earlier --strict",
    )
    p.add_argument(
        "--show-info",
        action="store_true",
        help="also report info-level notes (e.g. an exclusion that matches nothing)",
    )
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    p.add_argument(
        "--skip-non-configs",
        action="store_true",
        help=(
            "skip YAML/JSON files that are not quantization configs (for hooks that are "
            "handed every such file in a repository)"
        ),
    )


def _schema(sub: Any) -> None:
    p = sub.add_parser(
        "schema", help="print or write the draft-07 JSON Schemas", formatter_class=HelpFormatter
    )
    p.add_argument("--kind", choices=["config", "manifest", "plan"], default="config")
    p.add_argument("-o", "--output", metavar="PATH", help="file (or directory with --all)")
    p.add_argument("--all", action="store_true", help="write every kind into -o DIR")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if stale")


def _plan(sub: Any) -> None:
    p = sub.add_parser(
        "plan",
        help="compile a config against a manifest (plan JSON)",
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--manifest", metavar="M", required=True)
    p.add_argument("-o", "--output", metavar="FILE", help="write the plan JSON here")
    p.add_argument("--summary", action="store_true", help="print a per-format summary")


def _explain(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="which entries decided one quantizer, and how",
        formatter_class=HelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("--manifest", metavar="M", required=True)
    p.add_argument("quantizer", metavar="QUANTIZER", help="full quantizer name")


def _presets(sub: Any) -> None:
    p = sub.add_parser(
        "presets",
        help="list Model Optimizer's named presets, or print one",
        formatter_class=HelpFormatter,
    )
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument(
        "--source", action="store_true", help="the preset's YAML file as shipped (with imports)"
    )


def _migrate(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        formatter_class=HelpFormatter,
        help="rewrite legacy quant_cfg forms as list entries (same plan)",
        description=(
            "Rewrite a legacy flat-dict quant_cfg, single-key entries and nn.*-scoped entries "
            "as {quantizer_name, parent_class, cfg, enable} list entries. 'default' becomes "
            "'*' where it stands. The result is checked to load to the same config. Without "
            "--write the migrated file goes to stdout; --write rewrites it in place, keeping "
            "comments, line endings (CRLF or LF; a mixed file gets its dominant one) and a "
            "UTF-8 byte-order mark."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--write", action="store_true", help="rewrite the file(s) in place")


#: Subcommand → the function that defines its parser, in the order ``--help`` lists them.
_COMMANDS = {
    "lint": _lint,
    "schema": _schema,
    "plan": _plan,
    "explain": _explain,
    "presets": _presets,
    "migrate": _migrate,
}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, with the same default width found without ``shutil``.

    Why: argparse makes a formatter for every ``add_argument`` (to check the metavar), and its
    default width comes from ``shutil.get_terminal_size``: importing ``shutil`` (with ``bz2``,
    ``lzma`` and ``zlib``) costs ``qconfig lint`` about 7 M instructions of start-up, more than
    linting a preset (docs/performance.md). :func:`terminal_columns` is that function's rule.
    """

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width=None
    ) -> None:
        if width is None:
            width = terminal_columns() - 2  # as argparse does
        super().__init__(prog, indent_increment, max_help_position, width)


def terminal_columns() -> int:
    """``shutil.get_terminal_size().columns``: ``COLUMNS``, else stdout's terminal, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def version() -> str:
    from qconfig import __version__

    return __version__

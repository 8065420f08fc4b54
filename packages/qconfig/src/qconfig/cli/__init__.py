"""The ``qconfig`` command: lint, compile, explain and migrate quantization configs.

Why a CLI at all: the expensive mistakes in a quantization config (a pattern that matches
nothing, a legacy ``default`` placed last, a block size that does not divide a layer) are only
found by Model Optimizer after a long calibration. ``qconfig lint`` finds them in well under a
second, in an editor, a pre-commit hook or CI, so it has to start fast: the parser
(:mod:`~qconfig.cli.parser`) imports no command, ``main`` imports the one module of the command
given (:mod:`~qconfig.cli.lint`, ``schema``, ``plan``, ``explain``, ``presets``, ``migrate``),
and each imports what it needs when it runs (pydantic and the models dominate the start-up time
of ``lint``; ``--help`` never pays for them). What they share is in :mod:`~qconfig.cli.common`.

Exit codes (every command; docs/errors.md lists every message behind them):

* ``0`` — success; for ``lint``: no errors (and, with ``--strict``, no warnings either;
  info-level notes never fail and are only shown with ``--show-info``);
* ``1`` — findings: ``lint`` found an error (or a warning under ``--strict``); ``plan`` /
  ``explain`` / ``migrate`` could not load or compile the config; ``schema --check`` found a
  stale file;
* ``2`` — usage or I/O error: bad arguments, an input file that cannot be read (missing, a
  directory, a FIFO or device, no permission, not UTF-8, too large), a manifest that is not a
  manifest, an unknown preset or quantizer name;
* ``3`` — internal error: an exception nobody expected (a bug), printed as one line
  ``qconfig: internal error: <type>: <message> (rerun with --traceback ...)``; ``--traceback``
  (anywhere on the command line) prints the full traceback instead.

``lint`` prints ``path:line:col: CODE message (json.path)`` like ruff and flake8 (``--format
json`` for tools, ``--format github`` for workflow annotations); colour only on a terminal,
never when ``NO_COLOR`` is set.

Environment: ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1`` skips the check that a config asking for
weight quantization enables a weight quantizer (as it does in Model Optimizer); it is read here,
at the command line, and handed to :func:`qconfig.compile.compile_plan` as an argument.
"""

from __future__ import annotations

import argparse
import os
import sys

from qconfig.cli.common import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    Reported,
    UsageError,
    report_error,
    report_internal_error,
    take_traceback_flag,
)
from qconfig.cli.parser import build_parser

__all__ = [
    "EXIT_FINDINGS",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "build_parser",
    "main",
    "take_traceback_flag",
]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``)."""
    args_list, show_traceback = take_traceback_flag(sys.argv[1:] if argv is None else argv)
    # a command line that starts with the command needs only that command's parser
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)  # usage errors exit 2 here
    try:
        return run_command(args)
    except BrokenPipeError:  # `qconfig presets X | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every exception becomes a documented status
        return report_exception(exc, show_traceback)


def run_command(args: argparse.Namespace) -> int:
    """Import the one module of the command given and run it."""
    import importlib

    from qconfig.cli.startup import skip_pydantic_plugin_discovery

    skip_pydantic_plugin_discovery()
    command = importlib.import_module(f"qconfig.cli.{args.command}")
    try:
        return command.run(args)
    except Reported as exc:
        return exc.status
    except UsageError as exc:
        report_error(str(exc))
        return EXIT_USAGE


def report_exception(exc: Exception, show_traceback: bool) -> int:
    """The documented errors a command did not handle itself, else an internal error (3).

    Input files that cannot be read (:class:`~qconfig.fileio.InputFileError`, any other
    ``OSError``) and documents that are not what they claim
    (:class:`~qconfig.errors.DocumentError`) are usage/I-O errors (2); a config that does not
    load (:class:`~qconfig.errors.ConfigError`) is printed with its locations (1, or 2 for an
    unreadable file). Anything else is a bug: one line, or the traceback with ``--traceback``.
    """
    from qconfig.cli.common import one_line, print_diagnostics, status_for
    from qconfig.errors import ConfigError, DocumentError

    if isinstance(exc, (DocumentError, OSError)):
        report_error(one_line(str(exc)) or type(exc).__name__)
        return EXIT_USAGE
    if isinstance(exc, ConfigError):
        print_diagnostics(exc.diagnostics, "<config>")
        return status_for(exc.diagnostics)
    return report_internal_error("qconfig", exc, show_traceback)

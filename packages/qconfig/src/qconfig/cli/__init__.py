"""The ``qconfig`` command: lint, compile, explain and migrate quantization configs.

Why a CLI at all: the expensive mistakes in a quantization config (a pattern that matches
nothing, a legacy ``default`` placed last, a block size that does not divide a layer) are only
found by Model Optimizer after a long calibration. ``qconfig lint`` finds them in well under a
second, in an editor, a pre-commit hook or CI, so it has to start fast: the parser
(:mod:`~qconfig.cli.parser`) imports no command, ``main`` imports the one module of the command
given (:mod:`~qconfig.cli.lint`, ``schema``, ``plan``, ``explain``, ``presets``, ``migrate``),
and each imports what it needs when it runs (pydantic and the models dominate the start-up time
of ``lint``; ``--help`` never pays for them). What they share is in :mod:`~qconfig.cli.common`.

Exit codes (every command):

* ``0`` — success; for ``lint``: no errors (and, with ``--strict``, no warnings either;
  info-level notes never fail and are only shown with ``--show-info``);
* ``1`` — findings: ``lint`` found an error (or a warning under ``--strict``); ``plan`` /
  ``explain`` / ``migrate`` could not load or compile the config; ``schema --check`` found a
  stale file;
* ``2`` — usage or I/O error: bad arguments, a file or manifest that cannot be read, an unknown
  preset or quantizer name.

``lint`` prints ``path:line:col: CODE message (json.path)`` like ruff and flake8 (``--format
json`` for tools, ``--format github`` for workflow annotations); colour only on a terminal,
never when ``NO_COLOR`` is set.

Environment: ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1`` skips the check that a config asking for
weight quantization enables a weight quantizer (as it does in Model Optimizer); it is read here,
at the command line, and handed to :func:`qconfig.compile.compile_plan` as an argument.
"""

from __future__ import annotations

import os
import sys

from qconfig.cli.common import EXIT_FINDINGS, EXIT_OK, EXIT_USAGE, UsageError, report_error
from qconfig.cli.parser import build_parser

__all__ = ["EXIT_FINDINGS", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script passes it to ``sys.exit``)."""
    import importlib

    args_list = sys.argv[1:] if argv is None else list(argv)
    # a command line that starts with the command needs only that command's parser
    parser = build_parser(args_list[0] if args_list else None)
    args = parser.parse_args(args_list)  # usage errors exit 2 here
    from qconfig.cli.startup import skip_pydantic_plugin_discovery

    skip_pydantic_plugin_discovery()
    command = importlib.import_module(f"qconfig.cli.{args.command}")
    try:
        return command.run(args)
    except UsageError as exc:
        report_error(str(exc))
        return EXIT_USAGE
    except BrokenPipeError:  # `qconfig presets X | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130

"""``qconfig plan``: compile a config against a manifest and print or write the plan."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qconfig.cli.common import EXIT_OK, UsageError, compile_inputs


def run(args: argparse.Namespace) -> int:
    _, _, plan = compile_inputs(args.config, args.manifest)
    for d in plan.diagnostics:
        print(f"{args.config}: {d.severity}: {d.code} {d.message}", file=sys.stderr)
    text = plan.summary() + "\n" if args.summary else plan.to_json()
    if args.output:
        try:
            Path(args.output).write_text(plan.to_json(), encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
        if args.summary:
            sys.stdout.write(text)
    else:
        sys.stdout.write(text)
    return EXIT_OK

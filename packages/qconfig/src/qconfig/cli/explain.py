"""``qconfig explain``: which entries decided one quantizer, and how."""

from __future__ import annotations

import argparse

from qconfig.cli.common import EXIT_OK, UsageError, compile_inputs


def run(args: argparse.Namespace) -> int:
    manifest, config, _ = compile_inputs(args.config, args.manifest)
    from qconfig.explain import explain

    try:
        explanation = explain(config, manifest, args.quantizer)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None
    print(explanation)
    return EXIT_OK

"""``qconfig explain``: which entries decided one quantizer, and how."""

from __future__ import annotations

import argparse

from qconfig.cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    UsageError,
    compile_or_report,
    load_config_or_report,
    load_manifest,
)


def run(args: argparse.Namespace) -> int:
    manifest = load_manifest(args.manifest)
    config = load_config_or_report(args.config)
    if config is None:
        return EXIT_FINDINGS
    if compile_or_report(args.config, config, manifest) is None:
        return EXIT_FINDINGS
    from qconfig.explain import explain

    try:
        explanation = explain(config, manifest, args.quantizer)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None
    print(explanation)
    return EXIT_OK

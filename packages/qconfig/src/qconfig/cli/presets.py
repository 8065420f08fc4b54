"""``qconfig presets``: list Model Optimizer's named presets, or print one resolved."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qconfig.cli.common import EXIT_OK, UsageError


def _plain(value: Any) -> Any:
    """Preset dicts hold tuples (``num_bits: (4, 3)``); files hold lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    from qconfig import presets

    if args.name is None:
        for name in presets.names():
            print(name)
        return EXIT_OK
    try:
        source = presets.path(args.name)
    except KeyError:
        raise UsageError(
            f"unknown preset {args.name!r}; `qconfig presets` lists the names"
        ) from None
    if args.source:
        sys.stdout.write(source.read_text(encoding="utf-8"))
        return EXIT_OK
    value = _plain(presets.get(args.name))
    if args.format == "json":
        import json

        print(json.dumps(value, indent=2))
        return EXIT_OK
    import yaml

    header = (
        f"# Model Optimizer 0.47.0's {args.name}, imports resolved.\n"
        f"# The file it is written in: `qconfig presets {args.name} --source`.\n"
    )
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    body = yaml.dump(value, Dumper=dumper, sort_keys=False, default_flow_style=None, width=100)
    sys.stdout.write(header + body)
    return EXIT_OK

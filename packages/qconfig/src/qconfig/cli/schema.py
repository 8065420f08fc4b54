"""``qconfig schema``: print, write or check the draft-07 JSON Schemas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qconfig.cli.common import EXIT_FINDINGS, EXIT_OK, UsageError


def run(args: argparse.Namespace) -> int:
    from qconfig.schema import KINDS, SCHEMA_FILES, render

    if args.all and not args.output:
        raise UsageError("schema --all needs -o DIR")
    if args.all:
        targets = [(kind, Path(args.output) / SCHEMA_FILES[kind]) for kind in KINDS]
    elif args.output:
        targets = [(args.kind, Path(args.output))]
    else:
        if args.check:
            raise UsageError("schema --check needs -o FILE or --all -o DIR")
        sys.stdout.write(render(args.kind))
        return EXIT_OK
    stale = []
    for kind, path in targets:
        text = render(kind)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if args.check:
            if current != text:
                stale.append(path)
            continue
        if current != text:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
            print(f"wrote {path}", file=sys.stderr)
        else:
            print(f"unchanged {path}", file=sys.stderr)
    for path in stale:
        print(f"{path}: stale; run `qconfig schema --all -o {path.parent}`", file=sys.stderr)
    return EXIT_FINDINGS if stale else EXIT_OK

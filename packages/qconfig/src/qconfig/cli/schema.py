"""``qconfig schema``: print, write or check the draft-07 JSON Schemas."""

from __future__ import annotations

import argparse
import stat
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
        same = _holds(path, text.encode("utf-8"), check=args.check)
        if args.check:
            if not same:
                stale.append(path)
            continue
        if not same:
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


def _holds(path: Path, expected: bytes, *, check: bool) -> bool:
    """Does the file at ``path`` hold exactly ``expected``? A missing file does not.

    Compared as bytes, so a file that is not UTF-8 is simply stale (and overwritten). A path
    that cannot be a schema file (a directory; for ``--check`` also a FIFO or a device, which
    would block or never end) is a usage error rather than "stale"; without ``--check`` such a
    path is written to as given (``-o /dev/stdout``).
    """
    from qconfig.fileio import InputFileError, read_bytes, special_kind

    try:
        info = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        if check:
            raise UsageError(f"{path}: is a {special_kind(info.st_mode)}, not a regular file")
        return False
    if info.st_size != len(expected):
        return False  # not read at all: a 10 GB file at -o costs nothing
    try:
        return read_bytes(path) == expected
    except InputFileError as exc:
        raise UsageError(str(exc)) from None

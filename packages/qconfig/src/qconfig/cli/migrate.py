"""``qconfig migrate``: rewrite legacy ``quant_cfg`` forms as list entries."""

from __future__ import annotations

import argparse
import sys

from qconfig.cli.common import (
    EXIT_FINDINGS,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    plural,
    readable,
    report_error,
)


def run(args: argparse.Namespace) -> int:
    from qconfig.fileio import InputFileError
    from qconfig.migrate import MigrationError, migrate_file

    if len(args.files) > 1 and not args.write:
        raise UsageError("several files need --write (without it the result goes to stdout)")
    status = EXIT_OK
    for file in args.files:
        try:
            path = readable(file)
            result = migrate_file(path)
        except MigrationError as exc:
            report_error(f"{file}: {exc}")
            status = max(status, EXIT_FINDINGS)
            continue
        except (UsageError, InputFileError) as exc:  # unreadable, special file, not UTF-8
            report_error(str(exc))
            status = EXIT_USAGE
            continue
        what = (
            f"{plural(result.converted, 'legacy element')} -> "
            f"{plural(result.entries, 'entry', 'entries')}"
        )
        if not args.write:
            sys.stdout.write(result.text)
            note = f"{what}; --write rewrites the file" if result.changed else "already list form"
            print(f"{file}: {note}", file=sys.stderr)
            continue
        if not result.changed:
            print(f"{file}: already list form, unchanged", file=sys.stderr)
            continue
        try:
            # newline="": the text already has the file's own line endings (TextForm)
            path.write_text(result.text, encoding="utf-8", newline="")
        except OSError as exc:
            report_error(f"{file}: cannot write ({exc.strerror or exc})")
            status = EXIT_USAGE
            continue
        print(f"{file}: migrated {what}", file=sys.stderr)
    return status

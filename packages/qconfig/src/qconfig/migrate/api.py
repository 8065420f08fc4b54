"""The public functions: migrate a text or a file, and prove the result means the same.

Whatever the rewritten text says, it is loaded again and compared with the original's load
(imports resolved, conversions applied); any difference is a ``MigrationError``, so a migration
can never change the compiled plan.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from qconfig.fileio import is_regular_file, read_text
from qconfig.migrate.json_text import migrate_json
from qconfig.migrate.outcome import Migration, MigrationError
from qconfig.migrate.text_form import TextForm
from qconfig.migrate.yaml_text import migrate_yaml


def _semantics(src: Any, base_dir: Path | None) -> Any:
    """What a document means: the validated config (or entry list) as plain data."""
    from qconfig.errors import ConfigError
    from qconfig.loader import Recipe, load_document

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            value = load_document(src, base_dir=base_dir).validate()
        except ConfigError as exc:
            raise MigrationError(f"does not load; fix these first:\n{exc}") from None
    if isinstance(value, Recipe):
        return ("recipe", value.metadata, value.quantize.model_dump())
    if isinstance(value, list):
        return [e.model_dump() for e in value]
    return value.model_dump()


def migrate_text(
    text: str,
    *,
    json_format: bool = False,
    base_dir: str | os.PathLike | None = None,
    file: str | None = None,
) -> Migration:
    """Migrate a config's text; raises ``MigrationError`` if it does not load or would change.

    ``base_dir`` resolves the config's relative imports (the file's directory); ``file`` is the
    path ``text`` was read from, if any, so that load errors name it with line and column. The
    text keeps its form (:class:`TextForm`): a UTF-8 byte-order mark stays, and so do its line
    endings (the dominant one, for a file that mixes CRLF and LF).
    """
    form = TextForm.of(text)
    body = form.normalize(text)
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    original: Any = Path(file) if file is not None and is_regular_file(file) else body
    before = _semantics(original, root)
    new_text, converted, entries = (migrate_json if json_format else migrate_yaml)(body)
    if not converted:
        return Migration(text, 0, entries)
    after = _semantics(new_text, root)
    if after != before:
        raise MigrationError(
            "the migrated config would differ from the original; "
            "nothing was written (please report this as a qconfig bug)"
        )
    return Migration(form.apply(new_text), converted, entries)


def migrate_file(path: str | os.PathLike) -> Migration:
    """Migrate the file at ``path`` (not written back; see ``qconfig migrate --write``).

    Read through :func:`qconfig.fileio.read_text`: a FIFO, a device, a directory or bytes that
    are not UTF-8 raise :class:`qconfig.fileio.InputFileError` (one line, with the line and
    column of the first bad byte) instead of blocking or a ``UnicodeDecodeError``.
    """
    path = Path(path)
    text = read_text(path, encoding="utf-8")  # not utf-8-sig: the BOM is kept, see TextForm
    return migrate_text(
        text,
        json_format=path.suffix.lower() == ".json",
        base_dir=path.parent,
        file=os.fspath(path),
    )

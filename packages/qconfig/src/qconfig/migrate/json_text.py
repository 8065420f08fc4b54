"""JSON: the same conversion on plain data, written back with the file's own indent."""

from __future__ import annotations

import json

from qconfig.migrate.convert import count_changes, migrate_tree
from qconfig.migrate.outcome import MigrationError


def migrate_json(text: str) -> tuple[str, int, int]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MigrationError(f"invalid JSON: {exc}") from None
    new_body, elements = migrate_tree(body)
    if elements is None:
        return text, 0, 0
    dumped = json.dumps(new_body, indent=_json_indent(text), ensure_ascii=False) + "\n"
    return dumped, *count_changes(elements)


def _json_indent(text: str) -> int:
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" ")
        if stripped and len(stripped) < len(line):
            return len(line) - len(stripped)
    return 2

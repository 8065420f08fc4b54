"""What a migration returns, and the error it raises when it cannot be done safely."""

from __future__ import annotations

from dataclasses import dataclass


class MigrationError(ValueError):
    """The file cannot be migrated safely (it does not load, or the result would differ)."""


@dataclass(frozen=True)
class Migration:
    """The migrated text and what changed: ``converted`` legacy elements → ``entries`` entries."""

    text: str
    converted: int
    entries: int

    @property
    def changed(self) -> bool:
        return self.converted > 0

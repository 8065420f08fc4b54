"""``Diagnostic``: one finding with a stable code and a location (re-exported by
:mod:`qconfig.errors`, where it is documented to live).

Apart from :mod:`qconfig.errors` because a run without findings never makes one: every loader
module needs ``ConfigError`` to raise and catch, but defining this dataclass costs each
``qconfig lint`` start about 6 M instructions (docs/performance.md, "Start-up"), so it is
imported when the first diagnostic is made.
"""

from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["Diagnostic", "Severity"]

Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Diagnostic:
    """One finding: a stable ``code``, where it is, and what to do about it."""

    code: str
    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""
    fixable: bool = field(default=False, compare=False)

    def location(self) -> str:
        parts = [self.file or "<config>"]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)

    def __str__(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"{self.location()}: {self.code} {self.message}{where}"

    def to_dict(self) -> dict:
        return asdict(self)

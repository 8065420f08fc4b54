"""Diagnostics with a location, shared by the loader, lint and the CLI."""

from dataclasses import asdict, dataclass, field
from typing import Literal

__all__ = ["ConfigError", "Diagnostic", "format_path"]

Severity = Literal["error", "warning", "info"]


def format_path(path: tuple[int | str, ...] | list[int | str]) -> str:
    """JSON path in the form users read: ``quant_cfg[3].cfg.block_sizes``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier():
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


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


class ConfigError(ValueError):
    """A config file or text could not be loaded; ``diagnostics`` says where and why."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))

"""Diagnostics with a location, shared by the loader, lint and the CLI.

``Diagnostic`` is defined in :mod:`qconfig.diagnostic` and imported from there on first use
(``from qconfig.errors import Diagnostic`` works as ever): a lint run without findings never
needs it (docs/performance.md, "Start-up").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qconfig.diagnostic import Diagnostic

__all__ = ["ConfigError", "Diagnostic", "format_path"]


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


class ConfigError(ValueError):
    """A config file or text could not be loaded; ``diagnostics`` says where and why."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


def __getattr__(name: str) -> Any:
    if name == "Diagnostic":
        from qconfig.diagnostic import Diagnostic

        return Diagnostic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Diagnostics with a location, shared by the loader, lint and the CLI.

``Diagnostic`` is defined in :mod:`qconfig.diagnostic` and imported from there on first use
(``from qconfig.errors import Diagnostic`` works as ever): a lint run without findings never
needs it (docs/performance.md, "Start-up").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qconfig.diagnostic import Diagnostic

__all__ = ["ConfigError", "Diagnostic", "DocumentError", "format_path"]


def format_path(path: tuple[Any, ...] | list[Any]) -> str:
    """JSON path in the form users read: ``quant_cfg[3].cfg.block_sizes``.

    Any part is shown, never raised on: error paths are built from what a user wrote, which
    can be a ``null``, boolean or float key (``[None]``, ``[True]``, ``[1.5]``), or an integer
    too long for ``str()`` (Python refuses beyond 4,300 digits).
    """
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]" if part.bit_length() < 14_000 else f"[<{part.bit_length()}-bit int>]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}" if out else part
        else:
            try:
                out += f"[{part!r}]"
            except Exception:  # a failing repr (a huge int in a tuple) must not hide the error
                out += f"[<{type(part).__name__}>]"
    return out


class ConfigError(ValueError):
    """A config file or text could not be loaded; ``diagnostics`` says where and why."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class DocumentError(ValueError):
    """A manifest, plan or state file that is not what its format says.

    ``file`` (when it came from one) and ``path`` (the JSON path of the offending value, e.g.
    ``modules[3].quantizers[0].name``) say where; the message says what was expected and what was
    found. A ``ValueError`` so that callers that caught the old bare errors keep working.
    """

    def __init__(
        self, message: str, *, file: str | None = None, path: tuple[int | str, ...] = ()
    ) -> None:
        self.message = message
        self.file = file
        self.path = tuple(path)
        super().__init__(message)

    def __str__(self) -> str:
        where = [self.file] if self.file else []
        if self.path:
            where.append(format_path(self.path))
        return f"{': '.join(where)}: {self.message}" if where else self.message


def __getattr__(name: str) -> Any:
    if name == "Diagnostic":
        from qconfig.diagnostic import Diagnostic

        return Diagnostic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

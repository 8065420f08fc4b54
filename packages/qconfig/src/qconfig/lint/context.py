"""What a lint rule can look at: the raw document, the validated config, the manifest and the
compile result, plus a way to turn a JSON path into a file position."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: without a manifest, lint never imports compile/manifest
    from qconfig.compile import CompileResult
    from qconfig.diagnostic import Diagnostic
    from qconfig.manifest import Manifest
    from qconfig.normalize import ExpandedEntry
    from qconfig.quantize import QuantizeConfig

__all__ = ["Finding", "LintContext"]

Path = tuple[int | str, ...]


class Finding(NamedTuple):
    """A rule's result: a message and the JSON path it is about (file position comes later).

    A named tuple rather than a frozen dataclass: it is as immutable and reads the same, and
    defining it costs every ``qconfig lint`` start a quarter as much (docs/performance.md).
    """

    message: str
    path: Path = ()
    severity: str | None = None  # overrides the rule's default severity


class LintContext:
    """Everything a rule may read about one config; ``compiled`` and ``compile_errors`` are
    filled in only when a manifest is given.

    (A plain class rather than a dataclass: defining a dataclass costs every ``qconfig lint``
    start, docs/performance.md.)
    """

    def __init__(
        self,
        file: str | None,
        raw: Any,
        raw_path: Path,
        config: QuantizeConfig,
        expanded: list[ExpandedEntry],
        manifest: Manifest | None = None,
        compiled: CompileResult | None = None,
        locate: Callable[[Path], tuple[str | None, int | None, int | None]] | None = None,
        compile_errors: list[Diagnostic] | None = None,
    ) -> None:
        self.file = file
        #: the resolved document's QuantizeConfig mapping (imports already spliced)
        self.raw = raw
        #: where that mapping sits in the document (("quantize",) for recipes)
        self.raw_path = raw_path
        self.config = config
        self.expanded = expanded
        self.manifest = manifest
        self.compiled = compiled
        #: JSON path -> (file, line, column) where it was written
        self.locate = locate if locate is not None else _nowhere
        #: compile errors (QC101-QC103); model-aware rules are skipped when there are any
        self.compile_errors = compile_errors if compile_errors is not None else []

    def entry_path(self, index: int) -> Path:
        """JSON path of normalized entry ``index`` in the document."""
        return (*self.raw_path, "quant_cfg", *self.expanded[index].source)


def _nowhere(path: Path) -> tuple[str | None, int | None, int | None]:
    return (None, None, None)

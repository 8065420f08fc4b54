"""What a lint rule can look at: the raw document, the validated config, the manifest and the
compile result, plus a way to turn a JSON path into a file position."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qconfig.errors import Diagnostic

if TYPE_CHECKING:  # annotations only: without a manifest, lint never imports compile/manifest
    from qconfig.compile import CompileResult
    from qconfig.manifest import Manifest
    from qconfig.normalize import ExpandedEntry
    from qconfig.quantize import QuantizeConfig

__all__ = ["Finding", "LintContext"]

Path = tuple[int | str, ...]


@dataclass(frozen=True)
class Finding:
    """A rule's result: a message and the JSON path it is about (file position comes later)."""

    message: str
    path: Path = ()
    severity: str | None = None  # overrides the rule's default severity


@dataclass
class LintContext:
    file: str | None
    raw: Any  # the resolved document's QuantizeConfig mapping (imports already spliced)
    raw_path: Path  # where that mapping sits in the document (("quantize",) for recipes)
    config: QuantizeConfig
    expanded: list[ExpandedEntry]
    manifest: Manifest | None = None
    compiled: CompileResult | None = None
    locate: Callable[[Path], tuple[str | None, int | None, int | None]] = field(
        default=lambda path: (None, None, None)
    )
    #: compile errors (QC101-QC103); model-aware rules are skipped when there are any
    compile_errors: list[Diagnostic] = field(default_factory=list)

    def entry_path(self, index: int) -> Path:
        """JSON path of normalized entry ``index`` in the document."""
        return (*self.raw_path, "quant_cfg", *self.expanded[index].source)

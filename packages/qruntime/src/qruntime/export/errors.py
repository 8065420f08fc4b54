"""The one error an export raises for a model state the chosen format cannot express.

Why a class of its own: callers (the CLI, a job) tell "this model cannot be written in this
format" from a bug, and the message always names the quantizer and what would express it.
"""

from __future__ import annotations

__all__ = ["ExportError"]


class ExportError(ValueError):
    """A quantizer state the checkpoint format cannot express (the message names it)."""

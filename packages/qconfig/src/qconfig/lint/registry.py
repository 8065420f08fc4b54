"""Lint rules register here; each rule lives in its own module under ``qconfig.lint.rules``.

A rule is a function ``(LintContext) -> Iterable[Finding]`` registered with its stable code,
severity and one-line summary. Adding a rule means adding a module and decorating a function;
nothing central changes. docs/lint-rules.md has one section per code.
"""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from qconfig.lint.context import Finding, LintContext

__all__ = ["RULES", "Rule", "rule"]


class Rule(NamedTuple):
    """A registered rule (a named tuple: immutable, and cheap to define at start-up)."""

    code: str
    severity: str
    summary: str
    needs_manifest: bool
    check: "Callable[[LintContext], Iterable[Finding]]"
    fixable: bool = False


RULES: dict[str, Rule] = {}


def rule(
    code: str, severity: str, summary: str, *, needs_manifest: bool = False, fixable: bool = False
):
    """Register a lint rule under a stable code."""

    def register(fn):
        if code in RULES:
            raise ValueError(f"lint code {code} registered twice")
        RULES[code] = Rule(code, severity, summary, needs_manifest, fn, fixable)
        return fn

    return register

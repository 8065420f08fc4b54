"""``lint(src, manifest=None)``: diagnostics for a config, before any calibration run.

Every finding has a stable code (docs/lint-rules.md), a severity, a message and a location
(file, line, column, JSON path). Without a manifest only the rules that need none run; with one
the config is compiled and the model-aware rules run too.
"""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from qconfig.callable_module import make_callable
from qconfig.errors import ConfigError, format_path
from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import RULES, Rule

if TYPE_CHECKING:
    from qconfig.diagnostic import Diagnostic

__all__ = ["RULES", "lint", "lint_context"]


def _position(ctx: LintContext, path: tuple) -> tuple[str | None, int | None, int | None]:
    """(file, line, column) of ``path`` — the file may be an imported one."""
    return ctx.locate(tuple(path))


def _diagnostics(ctx: LintContext, rule: Rule, findings: Iterable[Finding]) -> list["Diagnostic"]:
    out = []
    for finding in findings:
        from qconfig.diagnostic import Diagnostic  # imported by the first finding (qconfig.errors)

        file, line, column = _position(ctx, finding.path)
        out.append(
            Diagnostic(
                rule.code,
                finding.severity or rule.severity,  # type: ignore[arg-type]
                finding.message,
                file,
                line,
                column,
                format_path(finding.path),
                rule.fixable,
            )
        )
    return out


def lint_context(src: Any, manifest=None, *, weight_check: bool = True) -> LintContext | None:
    """Load ``src`` (raising ConfigError on load/validation errors) and compile it if possible.

    ``weight_check`` is handed to the compiler (see :func:`qconfig.compile.compile_plan`).
    """
    from qconfig.loader import Recipe, load_document
    from qconfig.normalize import expand_quant_cfg
    from qconfig.quantize import QuantizeConfig

    document = load_document(src)
    validated = document.validate()
    if isinstance(validated, Recipe):
        config, raw, raw_path = validated.quantize, document.data["quantize"], ("quantize",)
    elif isinstance(validated, QuantizeConfig):
        config, raw, raw_path = validated, document.data, ()
    else:
        return None  # a snippet (unit, numerics): validation is all there is to check
    raw_quant_cfg = raw.get("quant_cfg", config.quant_cfg)
    ctx = LintContext(
        file=document.file,
        raw=raw,
        raw_path=raw_path,
        config=config,
        expanded=expand_quant_cfg(raw_quant_cfg, warn=False),
        manifest=manifest,
        locate=document.locate,
    )
    if manifest is not None:
        from qconfig.compile import CompileError, compile_detailed  # not needed without one
        from qconfig.diagnostic import Diagnostic

        try:
            ctx.compiled = compile_detailed(ctx.config, manifest, weight_check=weight_check)
        except CompileError as exc:
            for d in exc.diagnostics:
                path = _parse_entry_path(d.path, ctx)
                file, line, column = _position(ctx, path)
                ctx.compile_errors.append(
                    Diagnostic(d.code, d.severity, d.message, file, line, column, format_path(path))
                )
    return ctx


def _parse_entry_path(path: str, ctx: LintContext) -> tuple:
    """Compile errors name normalized entries (``quant_cfg[3].parent_class``); map to the file."""
    if path.startswith("quant_cfg[") and "]" in path:
        index = int(path[len("quant_cfg[") : path.index("]")])
        rest = path[path.index("]") + 1 :].lstrip(".")
        return (*ctx.entry_path(index), *([rest] if rest else []))
    return (*ctx.raw_path, "quant_cfg")


def lint(src: Any, manifest=None, *, weight_check: bool = True) -> list["Diagnostic"]:
    """All findings for ``src`` (path, text or mapping), sorted by position.

    ``weight_check=False`` skips the compiler's weight check (QC102), as
    ``MODELOPT_SKIP_WEIGHT_QUANT_CHECK=1`` does for ``qconfig lint``.
    """
    import qconfig.lint.rules  # noqa: F401  (registers the rules)

    try:
        ctx = lint_context(src, manifest, weight_check=weight_check)
    except ConfigError as exc:
        return list(exc.diagnostics)
    if ctx is None:
        return []
    found: list[Diagnostic] = list(ctx.compile_errors)
    for code in sorted(RULES):
        rule = RULES[code]
        if rule.needs_manifest and ctx.compiled is None:
            continue
        found.extend(_diagnostics(ctx, rule, rule.check(ctx)))
    return sorted(found, key=lambda d: (d.line or 0, d.column or 0, d.code))


make_callable(__name__, lint)

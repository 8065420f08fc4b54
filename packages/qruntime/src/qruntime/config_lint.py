"""Lint findings for the Python API: what ``qconfig lint`` would print, raised as warnings.

``quantize`` and ``compile_for`` accept any config that compiles, but a config can compile and
still be wrong for the model: ``FP8_KV_CFG`` alone matches no quantizer of a model without KV
quantizers and leaves every Linear at its INT8 defaults. The CLI says so; a Python caller who
never runs it would not learn it. This module runs the same linter against the model's manifest
and reports each finding with the CLI's located line, so a message found in a log can be
searched for in docs/lint-rules.md by its code.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from qconfig.errors import ConfigError
from qconfig.lint import lint as lint_config
from qconfig.manifest import Manifest
from qconfig.quantize import QuantizeConfig

if TYPE_CHECKING:
    from qconfig.errors import Diagnostic

__all__ = [
    "LINT_MODES",
    "LintMode",
    "QConfigLintError",
    "QConfigLintWarning",
    "check_config",
    "format_finding",
    "lint_for_model",
    "report_unraised",
]

LintMode = Literal["warn", "error", "off"]
LINT_MODES: tuple[str, ...] = ("warn", "error", "off")

logger = logging.getLogger("qruntime")


class QConfigLintWarning(UserWarning):
    """A lint finding (warning or error severity) on a config given to ``quantize``.

    A category of its own so that callers can silence or escalate exactly these findings with
    ``warnings.filterwarnings`` without touching other ``UserWarning`` s.
    """


class QConfigLintError(ConfigError):
    """``lint="error"``: the config has findings; raised before the model is touched.

    A :class:`~qconfig.errors.ConfigError` (``diagnostics`` lists the findings) so that code
    which already handles bad configs handles this one too.
    """


def format_finding(diagnostic: Diagnostic) -> str:
    """The located line ``qconfig lint`` prints (without colour): ``file:line:col: CODE message
    (json.path)`` for a file, ``<config>: CODE message (json.path)`` for a mapping."""
    return str(diagnostic)


def _lint_source(config: QuantizeConfig | Mapping[str, Any]) -> Any:
    """What the linter reads: mappings and paths as they are; a ``QuantizeConfig`` as the
    fields its author set (the defaults pydantic fills in, such as ``cfg.enable=True`` in every
    entry, would otherwise be reported as if they were written)."""
    if isinstance(config, QuantizeConfig):
        return config.model_dump(exclude_unset=True)
    return config


def lint_for_model(
    config: QuantizeConfig | Mapping[str, Any], manifest: Manifest, *, weight_check: bool
) -> list[Diagnostic]:
    """Every finding of ``qconfig lint`` for ``config`` on the model ``manifest`` describes."""
    with warnings.catch_warnings():
        # QC201 reports legacy forms; the compile that follows warns about them once already
        warnings.simplefilter("ignore", DeprecationWarning)
        return lint_config(_lint_source(config), manifest, weight_check=weight_check)


def check_config(
    config: QuantizeConfig | Mapping[str, Any],
    manifest: Manifest,
    *,
    mode: str,
    weight_check: bool,
    stacklevel: int = 2,
) -> list[Diagnostic]:
    """Lint ``config`` and report per ``mode``; returns the error-severity findings not yet
    reported (the caller's compile normally raises them; see :func:`report_unraised`).

    ``"warn"``: warning-severity findings become :class:`QConfigLintWarning` s, info ones are
    logged on the ``qruntime`` logger. ``"error"``: any warning- or error-severity finding
    raises :class:`QConfigLintError`. ``"off"``: nothing runs. ``stacklevel`` is counted from
    the caller of this function, as in :func:`warnings.warn`.
    """
    if mode not in LINT_MODES:
        raise ValueError(f"lint must be one of {', '.join(map(repr, LINT_MODES))}, not {mode!r}")
    if mode == "off":
        return []
    found = lint_for_model(config, manifest, weight_check=weight_check)
    notes = [d for d in found if d.severity == "info"]
    serious = [d for d in found if d.severity != "info"]
    for d in notes:
        logger.info("%s", format_finding(d))
    if mode == "error" and serious:
        raise QConfigLintError(serious)
    for d in serious:
        if d.severity == "warning":
            warnings.warn(format_finding(d), QConfigLintWarning, stacklevel=stacklevel + 1)
    return [d for d in serious if d.severity == "error"]


def report_unraised(errors: Sequence[Diagnostic], *, stacklevel: int = 2) -> None:
    """Warn about error-severity findings the compile accepted after all: the linter and the
    compiler should agree, but if they do not, a finding must not vanish."""
    for d in errors:
        warnings.warn(format_finding(d), QConfigLintWarning, stacklevel=stacklevel + 1)

"""Modules that can be called as their main function: ``qconfig.lint(...)``, ``qconfig.explain(...)``.

Why: ``qconfig.lint`` and ``qconfig.explain`` are public functions (docs/architecture.md) *and*
the names of the modules that define them. Python binds a submodule to its parent package's
attribute once the submodule is imported, so after ``import qconfig.lint.registry`` (a lint
rule does that) ``qconfig.lint`` is the module, not the function, and ``qconfig.lint(path)``
would fail depending on what was imported before. Making the module callable keeps both
spellings working whatever the import order.
"""

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["make_callable"]


class _CallableModule(types.ModuleType):
    __main_function__: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__main_function__(*args, **kwargs)


def make_callable(module_name: str, function: Callable[..., Any]) -> None:
    """Let the module ``module_name`` be called as ``function``."""
    module = sys.modules[module_name]
    module.__class__ = _CallableModule
    module.__main_function__ = function  # type: ignore[attr-defined]

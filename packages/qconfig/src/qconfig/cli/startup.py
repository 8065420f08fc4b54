"""Start-up tuning for the ``qconfig`` process (never applied to a library user's process)."""

from __future__ import annotations

import os
import sys
from typing import Any

_PYDANTIC_LOADER = "pydantic.plugin._loader"


def skip_pydantic_plugin_discovery() -> None:
    """Tell pydantic there are no plugins, so the first model build does not look for them.

    Why: pydantic discovers plugins through ``importlib.metadata`` entry points when it builds
    the first model, which imports ``email``, ``zipfile``, ``csv``... and reads the metadata of
    every installed distribution: about a quarter of ``qconfig lint``'s CPU time in an
    environment with torch installed. Validation plugins have no business in a linter's
    process. ``QCONFIG_PYDANTIC_PLUGINS=1`` keeps pydantic's normal discovery; so does a
    ``PYDANTIC_DISABLE_PLUGINS`` naming individual plugins (the user is configuring them). Any
    other name pydantic may look up in the module falls through to the real one.
    """
    if os.environ.get("QCONFIG_PYDANTIC_PLUGINS") == "1" or _PYDANTIC_LOADER in sys.modules:
        return
    if os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__") not in ("__all__", "1", "true"):
        return
    import types

    stub = types.ModuleType(_PYDANTIC_LOADER)

    def get_plugins() -> tuple[()]:
        return ()

    def fall_through(name: str) -> Any:
        import importlib

        if name.startswith("__"):  # the import system probes __path__ etc.: a plain module
            raise AttributeError(name)
        del sys.modules[_PYDANTIC_LOADER]
        return getattr(importlib.import_module(_PYDANTIC_LOADER), name)

    stub.get_plugins = get_plugins  # type: ignore[attr-defined]
    stub.__getattr__ = fall_through  # type: ignore[method-assign]
    sys.modules[_PYDANTIC_LOADER] = stub

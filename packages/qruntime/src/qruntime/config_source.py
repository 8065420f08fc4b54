"""What a ``--config`` argument names, loaded for quantizing: a file or a preset name.

Why a module: ``qruntime quantize`` accepts a YAML/JSON file or one of qconfig's preset names
(docs/writing-configs.md), may replace the config's calibration algorithm from the command line,
and reports each config entry with its file position. Every job needs these three steps the same
way, so they live in the library rather than in a job.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from qruntime.job import JobError

__all__ = ["config_entries", "entry_locator", "load_for_quantize", "resolve_config"]


def resolve_config(spec: str | Path) -> tuple[Any, str]:
    """``(source, label)``: an existing file path, or a preset name (``INT8_DEFAULT_CFG`` or
    ``INT8_DEFAULT``) whose mapping is returned as a deep copy."""
    from qconfig import presets

    path = Path(spec)
    if _names_a_file(path):
        return path, str(spec)
    text = str(spec)
    for name in (text, text.upper() + "_CFG", text.upper()):
        if name in presets.names():
            return presets.get(name), f"preset {name}"
    raise JobError(f"{spec}: no such config file or preset name (see `qconfig presets`)")


def _names_a_file(path: Path) -> bool:
    """Something is there (a file, or a FIFO, directory or unreadable entry the loader will
    refuse with its own located error), or the path cannot even be examined (a directory we may
    not search): the loader says why it cannot read it, rather than "no such preset"."""
    try:
        return path.exists() or path.is_symlink()
    except OSError:
        return True
    except ValueError:  # a NUL byte: no file can have this name
        return False


def load_for_quantize(source: Any, algorithm: str | None = None) -> Any:
    """The config to compile: a file is loaded (keeping its positions), a preset mapping copied;
    ``algorithm`` replaces the config's own calibration algorithm."""
    from qconfig.loader import load_config

    if isinstance(source, Mapping):
        config: Any = copy.deepcopy(dict(source))
        if algorithm is not None:
            config["algorithm"] = algorithm
        return config
    config = load_config(source)
    if algorithm is not None:
        raw = config.model_dump(exclude_unset=True)
        raw["algorithm"] = algorithm
        config = type(config).model_validate(raw)
    return config


def config_entries(config: Any) -> list[Any]:
    """The config's ``quant_cfg`` as normalized list entries (what ``plan.sources`` index)."""
    from qconfig.normalize import normalize_quant_cfg_list

    raw = config["quant_cfg"] if isinstance(config, Mapping) else config.quant_cfg
    return normalize_quant_cfg_list(raw)


def entry_locator(source: Any) -> Callable[[int], str | None]:
    """``locate(index)``: ``file:line:column`` of ``quant_cfg[index]`` in the config file, or
    None (a preset mapping, or an entry that an import brought in without a position)."""
    from qconfig.lint import lint_context

    ctx = lint_context(source) if not isinstance(source, Mapping) else None

    def locate(index: int) -> str | None:
        if ctx is None or index >= len(ctx.expanded):
            return None
        file, line, column = ctx.locate(ctx.entry_path(index))
        if file is None or line is None:
            return None
        return f"{Path(file).name}:{line}:{column}"

    return locate

"""Integer dict keys written as JSON strings: the one rule every reader uses.

``block_sizes``, ``bias`` and ``scale_block_sizes`` are keyed by tensor axes (``{-1: 16}``), and
JSON can only write string keys, so serialised configs, manifests and plans carry ``"-1"``. A key
is restored when it is exactly the decimal spelling of an int — an optional ``-``, then ``0`` or
ASCII digits without a leading zero — so that writing and reading round-trip. Anything else
(``"01"``, ``"--1"``, ``"²"``, ``" 1"``) stays a string, for validation to report as an unknown
key instead of being silently renumbered.
"""

import re
from typing import Any

__all__ = ["INT_KEY_PARENTS", "int_key", "restore_int_keys"]

#: Mapping fields whose keys are axes (docs/writing-configs.md, "YAML or JSON").
INT_KEY_PARENTS = frozenset({"block_sizes", "bias", "scale_block_sizes"})

_INT_SPELLING = re.compile(r"-?(?:0|[1-9][0-9]*)", re.ASCII)


def int_key(key: Any) -> Any:
    """``"-1"`` → ``-1``; every other key unchanged (module docstring)."""
    if isinstance(key, str) and _INT_SPELLING.fullmatch(key):
        return int(key)
    return key


def restore_int_keys(value: Any, parent: Any = None, *, everywhere: bool = False) -> Any:
    """A copy of ``value`` with the axis keys of :data:`INT_KEY_PARENTS` mappings restored.

    ``everywhere=True`` restores keys in every mapping (documents whose only int-like keys are
    axes, such as a dumped attribute set).
    """
    if isinstance(value, dict):
        convert = everywhere or parent in INT_KEY_PARENTS
        return {
            (int_key(k) if convert else k): restore_int_keys(v, k, everywhere=everywhere)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [restore_int_keys(v, parent, everywhere=everywhere) for v in value]
    return value

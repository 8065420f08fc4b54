"""Where a config comes from: a path, YAML/JSON text or a mapping, parsed into ``Parsed``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qconfig.errors import ConfigError
from qconfig.loader.convert import convert_tree
from qconfig.loader.json_source import parse_json
from qconfig.loader.locations import (
    IO_ERROR,
    SYNTAX_ERROR,
    Loc,
    Locations,
    Parsed,
    finish_parse,
    located_error,
)
from qconfig.loader.yaml_source import parse_yaml

SUFFIXES = (".yml", ".yaml", ".json")


def read_source(path: Path, file: str, loc: Loc | None = None) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise located_error(
            IO_ERROR, f"No such file: {file}", loc, file=None if loc else file
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise located_error(
            IO_ERROR, f"Cannot read {file}: {exc}", loc, file=None if loc else file
        ) from None


def parse_text(text: str, file: str | None, base_dir: Path, suffix: str = "") -> Parsed:
    if suffix == ".json":
        return parse_json(text, file, base_dir)
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, file, base_dir)
    if text.lstrip()[:1] in ("{", "["):
        # JSON is tried first so that JSON-only spellings (1e5, duplicate checks with JSON
        # positions) behave as JSON; YAML flow syntax such as {quant_cfg: []} falls back.
        try:
            return parse_json(text, file, base_dir)
        except ConfigError as json_error:
            if json_error.diagnostics[0].code != SYNTAX_ERROR:
                raise
            try:
                return parse_yaml(text, file, base_dir)
            except ConfigError as yaml_error:
                if yaml_error.diagnostics[0].code != SYNTAX_ERROR:
                    raise
                raise json_error from None
    return parse_yaml(text, file, base_dir)


def _looks_like_path(src: str) -> bool:
    return "\n" not in src and (src.endswith(SUFFIXES) or os.path.isfile(src))


def parse_source(src: Any, base_dir: str | os.PathLike | None) -> Parsed:
    if isinstance(src, (str, os.PathLike)) and (not isinstance(src, str) or _looks_like_path(src)):
        path = Path(src)
        file = os.fspath(src)
        return parse_text(read_source(path, file), file, path.parent, path.suffix.lower())
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(src, str):
        return parse_text(src, None, root)
    if isinstance(src, Mapping):
        locs = Locations()
        return finish_parse(convert_tree(src), locs, None, root)
    raise TypeError(
        f"load_config expects a path, YAML/JSON text or a mapping, got {type(src).__name__}"
    )

"""Where a config comes from: a path, YAML/JSON text or a mapping, parsed into ``Parsed``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qconfig.loader.convert import convert_mapping
from qconfig.loader.json_source import JsonSyntaxError, parse_json
from qconfig.loader.limits import MAX_BYTES, LoadBudget
from qconfig.loader.locations import (
    IO_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    finish_parse,
    located_error,
)
from qconfig.loader.yaml_source import YamlSyntaxError, parse_yaml

SUFFIXES = (".yml", ".yaml", ".json")


def read_source(
    path: Path,
    file: str,
    loc: Loc | None = None,
    budget: LoadBudget | None = None,
    json_path: JsonPath = (),
) -> str:
    """The text of a config or import, through :func:`qconfig.fileio.read_text`: a FIFO,
    ``/dev/zero``, a directory, a file we may not read or non-UTF-8 bytes are one located
    ``QC005`` (at the import's ``line:col`` for an import) instead of a hang or a traceback.
    The bytes are charged to the load's ``budget``."""
    from qconfig.fileio import InputFileError, read_text

    where: dict[str, Any] = {"file": None if loc else file, "path": json_path}
    try:
        text = read_text(path, max_bytes=MAX_BYTES)
    except InputFileError as exc:
        if exc.kind == "missing":
            raise located_error(IO_ERROR, f"No such file: {file}", loc, **where) from None
        reason = exc.reason
        if exc.line is not None and loc is None:  # the loaded file itself: point at the byte
            loc, reason = (file, exc.line, exc.column), exc.detail
        raise located_error(IO_ERROR, f"Cannot read {file}: {reason}", loc, **where) from None
    (budget if budget is not None else LoadBudget()).charge_bytes(len(text), file, loc, json_path)
    return text


def parse_text(
    text: str,
    file: str | None,
    base_dir: Path,
    suffix: str = "",
    budget: LoadBudget | None = None,
) -> Parsed:
    budget = budget if budget is not None else LoadBudget()
    if suffix == ".json":
        return parse_json(text, file, base_dir, budget)
    if suffix in (".yaml", ".yml"):
        return parse_yaml(text, file, base_dir, budget)
    if text.lstrip()[:1] in ("{", "["):
        # JSON is tried first so that JSON-only spellings (1e5, duplicate checks with JSON
        # positions) behave as JSON; YAML flow syntax such as {quant_cfg: []} falls back.
        charged = budget.values
        try:
            return parse_json(text, file, base_dir, budget)
        except JsonSyntaxError as json_error:
            budget.values = charged  # the text is measured again, as YAML
            try:
                return parse_yaml(text, file, base_dir, budget)
            except YamlSyntaxError:
                raise json_error from None
    return parse_yaml(text, file, base_dir, budget)


def _looks_like_path(src: str) -> bool:
    """One line naming a config file, or anything that exists (``/dev/zero``, a directory):
    reading it then says what is wrong with it, rather than parsing its name as YAML."""
    return "\n" not in src and (src.endswith(SUFFIXES) or os.path.lexists(src))


def parse_source(
    src: Any, base_dir: str | os.PathLike | None, budget: LoadBudget | None = None
) -> Parsed:
    budget = budget if budget is not None else LoadBudget()
    if isinstance(src, (str, os.PathLike)) and (not isinstance(src, str) or _looks_like_path(src)):
        path = Path(src)
        file = os.fspath(src)
        text = read_source(path, file, None, budget)
        return parse_text(text, file, path.parent, path.suffix.lower(), budget)
    root = Path(base_dir) if base_dir is not None else Path.cwd()
    if isinstance(src, str):
        budget.charge_bytes(len(src), None, None)
        return parse_text(src, None, root, "", budget)
    if isinstance(src, Mapping):
        locs = Locations()
        return finish_parse(convert_mapping(src, budget), locs, None, root)
    raise TypeError(
        f"load_config expects a path, YAML/JSON text or a mapping, got {type(src).__name__}"
    )

"""The public loading functions, and PTQ recipes.

``load_document`` parses and resolves imports without validating (lint and migrate need the raw
data with its locations); ``load_config``, ``load_recipe`` and ``load_snippet`` validate it as
the type the file declares or implies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from qconfig.errors import ConfigError
from qconfig.loader.diagnostics import validation_diagnostics, value_at
from qconfig.loader.imports import ImportSession, canonical_key
from qconfig.loader.limits import LoadBudget
from qconfig.loader.locations import (
    SHAPE_ERROR,
    VALIDATION_ERROR,
    JsonPath,
    Loc,
    Locations,
    Parsed,
    kind_of,
    located_error,
)
from qconfig.loader.schemas import RECIPE, schema_table, validate_as
from qconfig.loader.sources import parse_source

if TYPE_CHECKING:  # the models are imported lazily; annotations only
    from qconfig.quantize import QuantizeConfig


class Document:
    """A loaded file with imports resolved and ExMy/int-key conversions applied, not validated.

    ``schema`` is the declared or implied type name (``"QuantizeConfig"``, ``"recipe"``, a
    snippet type); :meth:`locate` answers where a JSON path was written, for tools (lint) that
    report their own findings. (A plain class, as :class:`~qconfig.loader.locations.Parsed`:
    defining a dataclass costs every load's cold start, docs/performance.md.)
    """

    __slots__ = ("_locs", "data", "file", "schema", "schema_loc")

    def __init__(
        self,
        data: Any,
        schema: str,
        file: str | None,
        locs: Locations,
        schema_loc: Loc | None = None,
    ) -> None:
        self.data = data
        self.schema = schema
        self.file = file
        self._locs = locs
        self.schema_loc = schema_loc  # the modelopt-schema comment, when there is one

    def __repr__(self) -> str:
        return f"Document(data={self.data!r}, schema={self.schema!r}, file={self.file!r})"

    def locate(self, path: tuple[int | str, ...]) -> tuple[str | None, int | None, int | None]:
        """``(file, line, column)`` where ``path`` (or its nearest ancestor) was written."""
        node = value_at(self.data, tuple(path))
        loc = self._locs.locate(tuple(path), isinstance(node, (dict, list)))
        return loc if loc is not None else (self.file, None, None)

    def validate(self) -> Any:
        """Validate ``data`` as ``schema``; errors raise ``ConfigError`` with locations."""
        if self.schema == RECIPE:
            return _validate_recipe(self)
        if self.schema == "QuantizeConfig":
            _refuse_empty_config(self.data, self._locs, (), self.file)
        schema = schema_table()[self.schema]
        try:
            return validate_as(schema, self.data)
        except ValueError as exc:
            raise ConfigError(
                validation_diagnostics(exc, self.data, self._locs, schema, file=self.file)
            ) from None


class Recipe(NamedTuple):
    """A PTQ recipe (``metadata`` + ``quantize``) as Model Optimizer's ``load_recipe``.

    (A named tuple: immutable like a frozen dataclass, and cheaper to define at start-up.)
    """

    metadata: dict[str, Any]  # recipe_type ("ptq") and description (default filled in)
    quantize: QuantizeConfig

    @property
    def recipe_type(self) -> str:
        return self.metadata["recipe_type"]

    @property
    def description(self) -> str:
        return self.metadata["description"]


_RECIPE_TYPES = (
    "ptq",
    "auto_quantize",
    "speculative_eagle",
    "speculative_dflash",
    "speculative_medusa",
)
_DEFAULT_DESCRIPTION = "Model optimization recipe."


def _root_schema(parsed: Parsed) -> str:
    """Declared schema, else a recipe when it has recipe sections, else a QuantizeConfig."""
    if parsed.schema is not None:
        return parsed.schema
    if isinstance(parsed.body, dict) and ("metadata" in parsed.body or "quantize" in parsed.body):
        return RECIPE
    return "QuantizeConfig"


def load_document(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Document:
    """Parse ``src`` and resolve its imports without validating it.

    Files without a schema comment are taken as a ``QuantizeConfig`` (or a recipe when they
    have ``metadata``/``quantize`` sections). ``base_dir`` anchors relative imports of text and
    mappings (default: the current directory); files always use their own directory.
    """
    budget = LoadBudget()  # one for the file and all its imports
    parsed = parse_source(src, base_dir, budget)
    schema = _root_schema(parsed)
    session = ImportSession(parsed.base_dir, budget)
    if parsed.file is not None:
        session.chain.append((canonical_key(Path(parsed.file)), session.display(parsed.file)))
    schema_type = RECIPE if schema == RECIPE else schema_table()[schema]
    data, locs = session.resolve(parsed, schema_type)
    return Document(data, schema, parsed.file, locs, parsed.schema_loc)


def _validate_recipe(doc: Document) -> Recipe:
    data, locs = doc.data, doc._locs
    where = locs.locate((), True)
    if not isinstance(data, dict):
        raise located_error(SHAPE_ERROR, "A recipe must be a mapping.", where, file=doc.file)
    for key in data:
        if key not in ("metadata", "quantize"):
            raise located_error(
                VALIDATION_ERROR,
                f"Unknown recipe section {key!r}; a PTQ recipe has 'metadata' and 'quantize'.",
                locs.locate((key,), True),
                (key,),
                file=doc.file,
            )
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        raise located_error(
            SHAPE_ERROR,
            "A recipe needs a 'metadata' mapping with 'recipe_type: ptq'.",
            locs.locate(("metadata",), True),
            ("metadata",),
            file=doc.file,
        )
    for key in metadata:
        if key not in ("recipe_type", "description"):
            raise located_error(
                VALIDATION_ERROR,
                f"Unknown metadata field {key!r}; expected 'recipe_type' and 'description'.",
                locs.locate(("metadata", key), True),
                ("metadata", key),
                file=doc.file,
            )
    recipe_type = metadata.get("recipe_type")
    if recipe_type != "ptq":
        problem = (
            "is missing"
            if recipe_type is None
            else f"is {recipe_type!r}, which qconfig does not load (only 'ptq')"
            if recipe_type in _RECIPE_TYPES
            else f"is {recipe_type!r}; expected one of {', '.join(_RECIPE_TYPES)}"
        )
        raise located_error(
            VALIDATION_ERROR,
            f"metadata.recipe_type {problem}.",
            locs.locate(("metadata", "recipe_type"), False),
            ("metadata", "recipe_type"),
            file=doc.file,
        )
    description = metadata.get("description", _DEFAULT_DESCRIPTION)
    if not isinstance(description, str):
        raise located_error(
            VALIDATION_ERROR,
            f"metadata.description must be a string, got {kind_of(description)}.",
            locs.locate(("metadata", "description"), False),
            ("metadata", "description"),
            file=doc.file,
        )
    if "quantize" not in data:
        raise located_error(
            SHAPE_ERROR,
            "A PTQ recipe must contain a 'quantize' section.",
            where,
            file=doc.file,
        )
    from qconfig.quantize import QuantizeConfig

    _refuse_empty_config(data["quantize"], locs, ("quantize",), doc.file)
    try:
        quantize = QuantizeConfig.model_validate(data["quantize"])
    except ValueError as exc:
        diagnostics = validation_diagnostics(
            exc, data["quantize"], locs, QuantizeConfig, prefix=("quantize",), file=doc.file
        )
        raise ConfigError(diagnostics) from None
    return Recipe({"recipe_type": "ptq", "description": description}, quantize)


def _refuse_empty_config(data: Any, locs: Locations, path: JsonPath, file: str | None) -> None:
    """``{}`` (written, passed from Python, or left after ``imports``) is refused: Model
    Optimizer's ``mtq.quantize(model, {})`` puts INT8 on every quantizer, output quantizers
    included, which nobody means by an empty config (docs/differences.md). A config that sets
    anything, even only ``algorithm``, keeps Model Optimizer's default ``quant_cfg``."""
    if data != {}:
        return
    where = "the quantize section" if path else "the config"
    raise located_error(
        SHAPE_ERROR,
        f"Empty config: {where} is an empty mapping, so there is nothing to quantize; Model "
        "Optimizer would read it as its default config (INT8 on every quantizer). Write "
        "'quant_cfg: []' for a config that quantizes nothing, or start from a preset "
        "('qconfig presets').",
        locs.locate(path, True) or ((file, 1, 1) if file else None),
        path,
        file=file,
    )


def load_config(
    src: str | os.PathLike | Mapping[str, Any] | QuantizeConfig,
    *,
    base_dir: str | os.PathLike | None = None,
) -> QuantizeConfig:
    """Load a ``QuantizeConfig`` from a path, YAML/JSON text or a mapping.

    Returns a validated ``qconfig.QuantizeConfig`` (a recipe file yields its ``quantize``
    section; use :func:`load_recipe` to keep ``metadata``). A ``QuantizeConfig`` passed in is
    returned as is. Raises ``ConfigError`` with located diagnostics.
    """
    from qconfig.quantize import QuantizeConfig

    if isinstance(src, QuantizeConfig):
        return src
    doc = load_document(src, base_dir=base_dir)
    if doc.schema == RECIPE:
        return _validate_recipe(doc).quantize
    if doc.schema != "QuantizeConfig":
        raise located_error(
            SHAPE_ERROR,
            f"This file is a {doc.schema} snippet; load_config reads a QuantizeConfig or a "
            "recipe (use load_snippet for snippets).",
            doc.schema_loc,
            file=doc.file,
        )
    return doc.validate()


def load_recipe(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Recipe:
    """Load a PTQ recipe (``metadata`` + ``quantize``) with its metadata."""
    doc = load_document(src, base_dir=base_dir)
    if doc.schema != RECIPE:
        raise located_error(
            SHAPE_ERROR,
            "Not a recipe: expected top-level 'metadata' and 'quantize' sections.",
            doc.schema_loc or doc.locate(()),
            file=doc.file,
        )
    return _validate_recipe(doc)


def load_snippet(
    src: str | os.PathLike | Mapping[str, Any], *, base_dir: str | os.PathLike | None = None
) -> Any:
    """Load a file of any declared schema (a unit, a numerics snippet, a preset).

    The result is what the schema validates to: a model instance, or a list of
    ``QuantizerCfgEntry`` for ``QuantizerCfgListConfig``. Undeclared files are read as a
    ``QuantizeConfig`` (or a recipe).
    """
    doc = load_document(src, base_dir=base_dir)
    return doc.validate()

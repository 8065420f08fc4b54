"""Load quantization configs from YAML/JSON files, text or mappings (docs/writing-configs.md).

Why not ``yaml.safe_load`` + ``QuantizeConfig(**data)``: users need to know *where* a config is
wrong. While parsing we record the line and column of every key and value, so a pydantic error at
``quant_cfg[3].cfg.block_sizes`` is reported as ``int4.yaml:14:9``, including errors inside
imported files. Two behaviours of Model Optimizer's loader are deliberately not copied: a
duplicate key is an error here (PyYAML silently keeps the last one), and ``imports`` resolve
relative to the *importing file*, never the current directory (Model Optimizer lets a stray file
in the CWD shadow a packaged snippet, even while the preset constants are being built;
docs/differences.md).

File format (as Model Optimizer's): one YAML document (mapping or list) or two (a header
mapping carrying ``imports:`` and a body); an optional ``# modelopt-schema: <path>`` comment in
the leading comment block names the snippet's type; ``imports: {alias: path}`` plus
``$import: alias`` references (in a mapping: merged, inline keys win; as a sole-key list element:
spliced when the snippet is a list of the list's element type, appended when it is one element).
Schema paths may be Model Optimizer's (``modelopt.torch.quantization.config.QuantizerCfgEntry``)
or ours (``qconfig.QuantizerCfgEntry``); ``QuantizerCfgListConfig`` is ``list[QuantizerCfgEntry]``.

Import paths are looked up in this order:

1. ``qconfig/<rest>``: a file shipped in this package under ``qconfig/presets/<rest>``, e.g.
   ``qconfig/units/default_disabled_quantizers`` or ``qconfig/int8_default``. Never shadowed.
2. An absolute path, or a path relative to the directory of the importing file (for text and
   mappings, relative to ``base_dir``, which defaults to the current directory since there is
   no file).
3. Model Optimizer's built-in names ``configs/numerics/<x>`` and ``configs/ptq/units/<x>``, when
   no such file exists under rule 2, map to our packaged ``qconfig/units/<x>``, so recipes written
   for Model Optimizer load unchanged.

A path without ``.yml``/``.yaml``/``.json`` suffix tries ``.yml`` then ``.yaml``.

Every failure raises :class:`qconfig.ConfigError` whose diagnostics carry a code, the file, the
1-based line and column, and the JSON path: ``QC001`` syntax (also a refused YAML tag or tagged
value, a key that is not a string or integer, a number too large, nesting or values beyond the
limits), ``QC002`` duplicate key, ``QC003`` validation, ``QC004`` import (also an import chain
too long), ``QC005`` I/O (a missing, special, unreadable or non-UTF-8 file, too many bytes),
``QC006`` document shape (root type, number of documents, schema comment, recipe sections, an
empty config). Hostile input gets one of these, never a traceback, a hang or a silent default:
the limits of one load, imports included, are in :mod:`~qconfig.loader.limits`.

Modules, one concern each: :mod:`~qconfig.loader.sources` (path, text or mapping),
:mod:`~qconfig.loader.yaml_source` and :mod:`~qconfig.loader.json_source` (parsing with
positions), :mod:`~qconfig.loader.convert` (ExMy and axis-key conversions),
:mod:`~qconfig.loader.locations` (positions and located errors), :mod:`~qconfig.loader.schemas`
(declared types), :mod:`~qconfig.loader.imports` (``imports``/``$import``),
:mod:`~qconfig.loader.diagnostics` (validation errors), :mod:`~qconfig.loader.limits` (one
budget per load), :mod:`~qconfig.loader.sniff` (is a file a config, for ``lint
--skip-non-configs``, without loading it) and :mod:`~qconfig.loader.api` (the functions below).
"""

from qconfig.loader.api import (
    Document,
    Recipe,
    load_config,
    load_document,
    load_recipe,
    load_snippet,
)
from qconfig.loader.imports import PRESETS_DIR
from qconfig.loader.locations import (
    DUPLICATE_KEY,
    IMPORT_ERROR,
    IO_ERROR,
    SHAPE_ERROR,
    SYNTAX_ERROR,
    VALIDATION_ERROR,
)

__all__ = [
    "DUPLICATE_KEY",
    "IMPORT_ERROR",
    "IO_ERROR",
    "PRESETS_DIR",
    "SHAPE_ERROR",
    "SYNTAX_ERROR",
    "VALIDATION_ERROR",
    "Document",
    "Recipe",
    "load_config",
    "load_document",
    "load_recipe",
    "load_snippet",
]

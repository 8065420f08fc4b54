"""``qconfig migrate``: rewrite legacy ``quant_cfg`` forms as list entries, comments kept.

Why a tool: Model Optimizer 0.44 changed ``quant_cfg`` from a dict to an ordered list and still
accepts the old forms with a deprecation warning, converting them with sharp edges
(docs/writing-configs.md): ``"default"`` becomes ``"*"`` *where it stands* (placed last it
switches off everything before it), and ``{"nn.Linear": {pattern: cfg}}`` becomes one entry
per pattern with ``parent_class``. Rewriting by hand is where those semantics get lost. This module applies
exactly the conversion of :func:`qconfig.normalize.expand_quant_cfg` to the *file*:

* a legacy flat dict ``quant_cfg: {pattern: cfg, ...}`` becomes a list, in dict order;
* single-key list entries ``- "*weight_quantizer": {num_bits: 8}`` and ``nn.*``-scoped entries
  become ``{quantizer_name, parent_class, cfg, enable}`` entries;
* ``"default"`` becomes ``"*"`` in place (never moved first: that would change the result);
* list-form entries, ``$import`` elements and everything outside ``quant_cfg`` stay as written.

YAML is edited with ruamel.yaml's round-trip loader so comments survive, and the result is
spliced into the original text element by element, so lines that did not need to change stay
byte-identical (ruamel would otherwise re-space every flow mapping in the file). Whatever the
text says, the result is checked before it is returned: it must load to exactly the config the
original loads to (``MigrationError`` otherwise), so the compiled plan cannot change.

Modules: :mod:`~qconfig.migrate.convert` (the conversion on a round-trip tree),
:mod:`~qconfig.migrate.comments` (moving ruamel's comments along),
:mod:`~qconfig.migrate.yaml_text` and :mod:`~qconfig.migrate.json_text` (writing the result
back into the text), :mod:`~qconfig.migrate.outcome` (``Migration``, ``MigrationError``) and
:mod:`~qconfig.migrate.api` (the check and the functions below).
"""

from qconfig.migrate.api import migrate_file, migrate_text
from qconfig.migrate.outcome import Migration, MigrationError

__all__ = ["Migration", "MigrationError", "migrate_file", "migrate_text"]

"""``qconfig.lint`` and ``qconfig.explain`` are functions whatever was imported first.

Both names are also modules; once a submodule is imported Python binds the module to the
package attribute, which used to turn ``qconfig.lint(...)`` into "module is not callable"
depending on import order (e.g. after a lint rule imported ``qconfig.lint.registry``)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import qconfig.lint.registry, qconfig.lint.context, qconfig.explain  # modules first
import qconfig
from qconfig import explain, lint
from qconfig.manifest import Manifest

text = "quant_cfg:\\n  - {quantizer_name: '*weight_quantizer', enable: true}\\n"
codes = [d.code for d in qconfig.lint(text)]
assert codes == [d.code for d in lint(text)] and codes, codes
manifest = Manifest.load("examples/manifests/llama_decoder.json")
config = {"quant_cfg": [{"quantizer_name": "*", "enable": False}]}
name = manifest.quantizer_names()[0]
assert qconfig.explain(config, manifest, name).quantizer == name
assert explain(config, manifest, name).quantizer == name
assert qconfig.lint.registry.RULES  # the submodules stay reachable as attributes
"""


def test_lint_and_explain_are_callable_after_their_submodules_are_imported():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr

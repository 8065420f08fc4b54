"""Every extension-point example in docs/architecture.md runs, as written, and passes.

Why a test: the examples are how a newcomer adds a format, an algorithm, a site provider or a
lint rule; an example that has drifted from the code is worse than none. Each block marked
``<!-- example: NAME -->`` runs in a fresh interpreter (registrations are process-wide), with
the repository root as working directory; its own ``assert`` statements are the checks.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
REQUIRED = {"format", "algorithm", "site-provider", "lint-rule"}

_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\s*\n```python\n(.*?)\n```", re.DOTALL)


def _examples() -> dict[str, str]:
    return dict(_EXAMPLE.findall(DOC.read_text(encoding="utf-8")))


def test_every_extension_point_has_an_example() -> None:
    assert REQUIRED <= set(_examples())


@pytest.mark.parametrize("name", sorted(_examples()))
def test_example_runs(name: str) -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:qruntime"}
    result = subprocess.run(
        [sys.executable, "-c", _examples()[name]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"example {name!r} failed:\n{result.stdout}\n{result.stderr}"

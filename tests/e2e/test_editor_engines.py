"""Editor completion, hover and validation in the real engines (tests/e2e/node, Node.js).

The JSON Schema is only worth publishing if VS Code's JSON engine and yaml-language-server
actually complete and flag things with it, so those engines run against schemas/ in
``node --test``. Missing Node or packages is a failure, not a skip: a skipped editor test is an
untested schema. ``make node`` installs the pinned packages.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "e2e" / "node"
HOW_TO_FIX = "run `make node` (needs Node.js >= 20 and npm)"


def _installed_version(package: str) -> str | None:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text(encoding="utf-8"))["version"]


def test_node_packages_are_installed_at_the_pinned_versions():
    pins = json.loads((NODE_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]
    assert pins, "tests/e2e/node/package.json pins nothing"
    for package, version in pins.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package} must be pinned exactly"
        installed = _installed_version(package)
        assert installed == version, (
            f"{package}: installed {installed}, pinned {version}; {HOW_TO_FIX}"
        )


def test_editor_engines():
    node = shutil.which("node")
    assert node, f"node is not on PATH; {HOW_TO_FIX}"
    assert (NODE_DIR / "node_modules").is_dir(), (
        f"tests/e2e/node/node_modules is missing; {HOW_TO_FIX}"
    )
    files = sorted(str(p.relative_to(ROOT)) for p in NODE_DIR.glob("*.test.mjs"))
    assert len(files) >= 3, files
    # Explicit files rather than a directory: Node 20 searches a directory, Node 22 treats the
    # arguments as globs; a file list means the same to both.
    proc = subprocess.run(
        [node, "--test", *files], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    print(output)
    counts = dict(re.findall(r"^# (pass|fail|skipped|todo|cancelled) (\d+)$", output, re.M))
    assert proc.returncode == 0, f"node --test failed ({counts}):\n{output[-6000:]}"
    assert int(counts.get("pass", 0)) >= 30 and counts.get("fail") == "0", counts
    assert counts.get("skipped") == "0" and counts.get("todo") == "0", counts

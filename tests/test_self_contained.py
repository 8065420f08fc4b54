"""A clone of the repository is all a user or CI has: nothing tracked may reach outside it.

Earlier sessions read reference data from a folder beside the checkout, so ``make test`` in a
plain clone failed at collection. The data now lives in tests/data; this test keeps it that way
by scanning every tracked text file for paths that leave the checkout.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `../x/y`, `../../x`: a relative path that climbs; what follows is the first components
_CLIMB = re.compile(r"((?:\.\./)+)([\w.\-]+(?:/[\w.\-]+)*)")
# folders that sat beside the checkout on the machines this project was developed on
_SIBLING_NAMES = ("shared", ".library")


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")  # a source tarball has no tracked-file list
    files = []
    for name in out.decode().split("\0"):
        path = REPO / name
        if name and path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:
                files.append(path)
    return files


def _escapes(base: Path, climb: str, rest: str) -> Path | None:
    """The target when ``climb + rest`` resolved from ``base`` lands outside the checkout."""
    target = (base / (climb + rest)).resolve()
    return None if target.is_relative_to(REPO) else target


def outside_references(path: Path, text: str) -> list[str]:
    found = []
    for line_no, line in enumerate(text.splitlines(), 1):
        where = f"{path.relative_to(REPO)}:{line_no}"
        for name in _SIBLING_NAMES:
            if re.search(rf"(?<![\w.])\.\./{re.escape(name)}\b", line):
                found.append(f"{where}: refers to ../{name}")
        if str(REPO) + "/" in line:
            found.append(f"{where}: absolute path into this machine's checkout ({REPO})")
        for match in _CLIMB.finditer(line):
            climb, rest = match.groups()
            if not rest.strip("./"):
                continue  # `../../..` is the climb itself, it names nothing yet
            for base in (path.parent, REPO):  # relative to the file, or to the working dir
                target = _escapes(base, climb, rest)
                if target is not None and target.exists():
                    found.append(f"{where}: {climb}{rest} resolves to {target}, outside")
    return found


def test_no_tracked_file_refers_outside_the_checkout():
    problems = []
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        problems += outside_references(path, text)
    assert not problems, "\n".join(problems)


# spelled from their parts, so that this file does not itself name a path outside the checkout
UP = "../"
SIBLING, TOOLS = _SIBLING_NAMES


@pytest.mark.parametrize(
    "line",
    [
        f'DATA = Path("{UP}{SIBLING}/data/vectors.pt")',
        f"see {UP}{SIBLING}/notes/a.md",
        f"tools in {UP}{TOOLS}/b.md",
    ],
)
def test_the_scan_catches_sibling_references(line):
    assert outside_references(REPO / "tests" / "x.py", line)


def test_the_scan_catches_a_climb_to_an_existing_outside_path(tmp_path):
    # from tests/, enough `../` reaches the filesystem root and then any existing path
    depth = len((REPO / "tests").parts) - 1
    line = "../" * depth + str(tmp_path).lstrip("/")
    assert outside_references(REPO / "tests" / "x.py", line)


def test_the_scan_catches_an_absolute_path_into_the_checkout():
    assert outside_references(REPO / "docs" / "x.md", f"{REPO}/.venv/bin/python")


def test_relative_schema_paths_inside_the_checkout_are_fine():
    line = "# yaml-language-server: $schema=../../schemas/qconfig-config.schema.json"
    assert outside_references(REPO / "examples" / "configs" / "x.yaml", line) == []

"""Fixtures of the fuzz suite: the default/long profile switch and a scratch working directory.

Every fuzz test takes ``fuzz_long``: it runs once as ``[default]`` (its share of the few
thousand examples of ``make test``, derandomized) and once as ``[long]``, marked
``fuzz_long`` and deselected by pytest.ini unless ``-m fuzz_long`` asks for it
(``make fuzz-long``: at least 50,000 examples in all, random seeds).
"""

import os

import pytest


@pytest.fixture(
    params=[
        pytest.param(False, id="default"),
        pytest.param(True, id="long", marks=pytest.mark.fuzz_long),
    ]
)
def fuzz_long(request: pytest.FixtureRequest) -> bool:
    """False for the default profile, True for the long run."""
    return request.param


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty working directory: relative imports and file names in generated configs
    resolve here, and generated files are written here, never outside tmp_path."""
    monkeypatch.chdir(tmp_path)
    os.makedirs(tmp_path / "sub", exist_ok=True)
    return tmp_path

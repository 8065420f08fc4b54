"""The ``qconfig-lint`` pre-commit hook with the real ``pre-commit`` package.

Two ways a project uses the hook, both tested on throw-away git repositories:

* ``git commit`` in a repository whose ``.pre-commit-config.yaml`` runs the hook as this
  repository's ``.pre-commit-hooks.yaml`` defines it (entry, file types), with ``--manifest``
  passed through ``args``: a bad config stops the commit with ``file:line:col: CODE message``,
  a good one goes in. The hook runs from this checkout's environment (``language: unsupported``)
  so the commit tests take seconds.
* ``pre-commit run`` with ``repo: <a git copy of this checkout>`` and ``rev``, as users
  reference it, which exercises the published manifest as is (``language: python``): pre-commit builds its own virtualenv and ``pip install``s the
  repository root. pip is kept offline here (no index, no dependency resolution, no build
  isolation; pydantic & co. come from this interpreter's site-packages via ``PYTHONPATH``):
  what is tested is that the root builds, the ``qconfig`` script lands in the hook's env and
  the hook behaves; that the declared dependencies are the package's own is checked from the
  two pyproject files. (With network access, installing from the index takes 1-2 minutes here.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PRE_COMMIT = BIN / "pre-commit"
LLAMA = ROOT / "examples" / "manifests" / "llama_decoder.json"

GOOD = """\
algorithm: max
quant_cfg:
  - quantizer_name: "*"
    enable: false
  - quantizer_name: "*weight_quantizer"
    cfg: {num_bits: 8, axis: 0}
  - quantizer_name: "*input_quantizer"
    cfg: {num_bits: 8, axis: null}
"""
BAD = GOOD.replace("{num_bits: 8, axis: 0}", "{num_bits: 8, axis: 0, num_bit: 4}")  # 6:33
# valid, but the pattern matches nothing in the llama manifest: a warning (QC205 at 7:5)
UNMATCHED = GOOD.replace('"*input_quantizer"', '"*mlpp*input_quantizer"')
# YAML that is not a quantization config: the hook must leave it alone
WORKFLOW = "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps: []\n"


def _hook() -> dict:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "qconfig-lint"]
    return hook


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PRE_COMMIT"))}
    env.update(
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
        PRE_COMMIT_COLOR="never",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,  # no user git config (hooksPath, templates) leaks in
        **extra,
    )
    return env


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: int = 120):
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _git_repo(path: Path, env: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    assert _run(["git", "init", "-q", "-b", "main"], path, env).returncode == 0
    return path


def test_hook_manifest_is_valid():
    proc = _run([PRE_COMMIT, "validate-manifest", ".pre-commit-hooks.yaml"], ROOT, dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hook = _hook()
    assert hook["language"] == "python"
    assert hook["types_or"] == ["yaml", "json"]
    assert hook["entry"].split()[:2] == ["qconfig", "lint"]
    assert "args" not in hook  # left to the user: `args: [--manifest, model.json]`


def test_root_pyproject_builds_the_package_it_says():
    """pre-commit installs the repository root; it must be the qconfig distribution."""
    root = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    package = tomllib.loads(
        (ROOT / "packages" / "qconfig" / "pyproject.toml").read_text(encoding="utf-8")
    )["project"]
    for key in ("name", "version", "dependencies", "requires-python", "scripts"):
        assert root[key] == package[key], key


def test_commit_is_blocked_by_a_bad_config_and_passes_a_good_one(tmp_path):
    env = _env(tmp_path)
    repo = _git_repo(tmp_path / "project", env)
    hook = _hook()
    program, *rest = hook["entry"].split()
    config = {
        "repos": [
            {
                "repo": "local",
                "hooks": [
                    {
                        "id": hook["id"],
                        "name": hook["name"],
                        # the published entry, run from this checkout's environment
                        "entry": " ".join([str(BIN / program), *rest]),
                        "language": "unsupported",
                        "types_or": hook["types_or"],
                        "args": ["--manifest", "model.json"],
                    }
                ],
            }
        ]
    }
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(LLAMA, repo / "model.json")
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(WORKFLOW, encoding="utf-8")
    (repo / "configs").mkdir()
    (repo / "configs" / "int8.yaml").write_text(GOOD, encoding="utf-8")
    assert _run([PRE_COMMIT, "install"], repo, env).returncode == 0

    def commit(message: str):
        assert _run(["git", "add", "-A"], repo, env).returncode == 0
        return _run(["git", "commit", "-m", message], repo, env)

    def commits() -> int:
        out = _run(["git", "rev-list", "--count", "HEAD"], repo, env).stdout.strip()
        return int(out) if out.isdigit() else 0

    # a good config, the manifest, the hook config and a workflow file: all pass
    first = commit("good config")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^qconfig lint \(quantization configs\)\.+Passed$", first.stderr, re.M)
    assert commits() == 1

    # a typo: the commit is refused, the message says where
    (repo / "configs" / "int8.yaml").write_text(BAD, encoding="utf-8")
    refused = commit("typo")  # git shows a hook's output on stderr
    assert refused.returncode != 0
    assert "configs/int8.yaml:6:33: QC003 Unknown field 'num_bit'" in refused.stderr
    assert "Failed" in refused.stderr and commits() == 1

    # valid YAML, but the manifest shows the pattern matches nothing: refused too (--strict)
    (repo / "configs" / "int8.yaml").write_text(UNMATCHED, encoding="utf-8")
    refused = commit("unmatched pattern")
    assert refused.returncode != 0
    assert "configs/int8.yaml:7:5: QC205 '*mlpp*input_quantizer' matches no quantizer" in (
        refused.stderr
    )
    assert commits() == 1

    (repo / "configs" / "int8.yaml").write_text(GOOD.replace("axis: 0", "axis: -1"), "utf-8")
    fixed = commit("fixed")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert commits() == 2


def _hook_repository(path: Path, env: dict[str, str]) -> Path:
    """A git repository holding what a user's pre-commit fetches from this one."""
    _git_repo(path, env)
    shutil.copy(ROOT / ".pre-commit-hooks.yaml", path)
    shutil.copy(ROOT / "pyproject.toml", path)
    shutil.copytree(
        ROOT / "packages" / "qconfig",
        path / "packages" / "qconfig",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"),
    )
    assert _run(["git", "add", "-A"], path, env).returncode == 0
    assert _run(["git", "commit", "-qm", "hooks"], path, env).returncode == 0
    return path


def test_published_hook_installs_and_runs_from_a_hook_repository(tmp_path):
    offline = {
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_NO_BUILD_ISOLATION": "0",  # pip's spelling of --no-build-isolation
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
        # the hook env needs pip only (setuptools for the build comes from PYTHONPATH)
        "VIRTUALENV_NO_SETUPTOOLS": "1",
        "VIRTUALENV_NO_WHEEL": "1",
    }
    env = _env(tmp_path, **offline)
    hooks = _hook_repository(tmp_path / "hooks", env)
    rev = _run(["git", "rev-parse", "HEAD"], hooks, env).stdout.strip()
    project = _git_repo(tmp_path / "project", env)
    # what a user writes: the repository and a revision, the hook by id, nothing overridden
    config = {"repos": [{"repo": str(hooks), "rev": rev, "hooks": [{"id": "qconfig-lint"}]}]}
    (project / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (project / "bad.yaml").write_text(BAD, encoding="utf-8")
    (project / "good.yaml").write_text(GOOD, encoding="utf-8")
    (project / "ci.yml").write_text(WORKFLOW, encoding="utf-8")
    assert _run(["git", "add", "-A"], project, env).returncode == 0

    files = ["bad.yaml", "good.yaml", "ci.yml", ".pre-commit-config.yaml"]
    failed = _run([PRE_COMMIT, "run", "--files", *files], project, env, timeout=300)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    report = output.split("- exit code: 1", 1)[1]
    assert "bad.yaml:6:33: QC003 Unknown field 'num_bit'" in report
    assert "Found 1 error in 2 files." in report  # good.yaml too; ci.yml & co. skipped

    # it ran from the virtualenv pre-commit built from the repository root
    installed = list(
        (tmp_path / "pre-commit-home").glob("**/site-packages/qconfig/cli/__init__.py")
    )
    assert len(installed) == 1, installed
    ours = (ROOT / "packages" / "qconfig" / "src" / "qconfig" / "cli" / "__init__.py").read_bytes()
    assert installed[0].read_bytes() == ours
    assert list((tmp_path / "pre-commit-home").glob("**/bin/qconfig"))

    passed = _run([PRE_COMMIT, "run", "--files", "good.yaml", "ci.yml"], project, env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout

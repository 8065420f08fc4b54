"""Fuzz: the ``qconfig`` command line on generated files, and special files as every input.

The CLI runs in-process (``qconfig.cli.main``). Allowed: exit status 0, 1 (findings) or 2
(usage or I/O error). Status 3 is an internal error, i.e. a bug: it fails the test, as does a
traceback on stderr or a run past the watchdog.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat

import pytest
from fuzz_corpus import MANIFESTS, manifest_path
from fuzz_support import memory_ceiling, run_fuzz, watchdog
from fuzz_text import bomb_documents, documents
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

ALLOWED_STATUS = (0, 1, 2)


def run_cli(*argv: str, seconds: float = 20.0) -> tuple[int, str, str]:
    """``qconfig *argv`` in-process: (status, stdout, stderr)."""
    from qconfig.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with watchdog(seconds), memory_ceiling(1 << 30):
            try:
                status = main(list(argv))
            except SystemExit as exc:  # argparse
                status = exc.code if isinstance(exc.code, int) else 2
    return status, out.getvalue(), err.getvalue()


def check_status(argv: tuple[str, ...], status: int, err: str) -> None:
    assert status in ALLOWED_STATUS, f"qconfig {' '.join(argv)} exited {status}: {err[-2000:]}"
    assert "Traceback (most recent call last)" not in err, err[-2000:]


COMMANDS = ["lint", "lint-strict", "lint-skip", "plan", "explain", "migrate", "migrate-write"]


def _argv(command: str, config: str, manifest: str, quantizer: str, out: str) -> list[str]:
    if command == "lint":
        return ["lint", config, "--manifest", manifest, "--format", "json"]
    if command == "lint-strict":
        return ["lint", "--strict", config, "--manifest", manifest, "--format", "github"]
    if command == "lint-skip":
        return ["lint", "--skip-non-configs", config]
    if command == "plan":
        return ["plan", config, "--manifest", manifest, "-o", out, "--summary"]
    if command == "explain":
        return ["explain", config, "--manifest", manifest, "--", quantizer]
    if command == "migrate":
        return ["migrate", config]
    return ["migrate", "--write", config]


@st.composite
def command_lines(draw: st.DrawFn) -> tuple[str, str, bytes, str, str]:
    """``(command, file name, file bytes, manifest name, quantizer name)``."""
    suffix, text = draw(documents())
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "latin-1"]))
    data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
    name = "config" + draw(st.sampled_from([suffix, ".yaml", ".json", ".txt"]))
    quantizer = draw(
        st.sampled_from(
            ["stem.weight_quantizer", "lm_head.input_quantizer", "-x", "", "nope", "\u202e"]
        )
    )
    return draw(st.sampled_from(COMMANDS)), name, data, draw(st.sampled_from(MANIFESTS)), quantizer


def test_command_lines(fuzz_long, workspace):
    """Generated files through every command: exit 0/1/2, never 3, no traceback; a written
    plan reads back."""
    from qconfig.plan import Plan

    def check(args):
        command, name, data, manifest, quantizer = args
        config = workspace / name
        config.write_bytes(data)
        out = workspace / "plan.json"
        out.unlink(missing_ok=True)
        argv = _argv(command, str(config), str(manifest_path(manifest)), quantizer, str(out))
        status, _, err = run_cli(*argv)
        check_status(tuple(argv), status, err)
        if command == "plan" and status == 0:
            Plan.from_json(out.read_text(encoding="utf-8"))
        return f"{command}:{status}"

    scale_bits = (  # compiled, then exit 3 writing the plan (TypeError in the spec)
        b"quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: [2, 1], block_sizes: "
        b"{-1: 16, type: dynamic, scale_bits: 4}}\n"
    )
    seeds = (
        ("plan", "config.yaml", scale_bits, "cnn", "stem.weight_quantizer"),
        ("lint", "config.yaml", b"quant_cfg: !!timestamp x\n", "cnn", "x"),
        ("migrate", "config.yaml", b"quant_cfg: {1: 8}\n", "cnn", "x"),
        ("migrate-write", "config.yaml", b"quant_cfg: {'*': {num_bits: 8}}\r\n", "cnn", "x"),
        ("lint-skip", "config.yaml", b"\xff\xfe", "cnn", "x"),
    )
    outcomes = run_fuzz("cli", command_lines(), check, long=fuzz_long, seeds=seeds)
    assert sum(n for k, n in outcomes.items() if k.endswith(":0")) >= 1, outcomes


def test_skip_non_configs_decides_cheaply(workspace):
    """The pre-commit mode is handed every YAML file of a repository: a bomb that is not a
    config is skipped or rejected within the bomb budget (3 s), never expanded."""
    from fuzz_support import BOMB_SECONDS
    from hypothesis import given, settings

    @settings(max_examples=15, derandomize=True, database=None, deadline=None)
    @given(bomb_documents())
    def one(text):
        path = workspace / "unrelated.yaml"
        path.write_text(text, encoding="utf-8")
        argv = ("lint", "--skip-non-configs", str(path))
        status, _, err = run_cli(*argv, seconds=BOMB_SECONDS)
        check_status(argv, status, err)

    one()


# -- special files ----------------------------------------------------------------------------


@pytest.fixture
def special_files(workspace):
    """Paths that are not regular files, or not readable: FIFO, devices, directory, links."""
    fifo = workspace / "fifo.yaml"
    os.mkfifo(fifo)
    directory = workspace / "dir.yaml"
    directory.mkdir()
    (workspace / "loop.yaml").symlink_to(workspace / "loop.yaml")
    (workspace / "dangling.yaml").symlink_to(workspace / "missing" / "x.yaml")
    out = {
        "fifo": str(fifo),
        "directory": str(directory),
        "symlink-loop": str(workspace / "loop.yaml"),
        "dangling-symlink": str(workspace / "dangling.yaml"),
    }
    for device in ("/dev/zero", "/dev/urandom", "/dev/null"):
        if os.path.exists(device) and stat.S_ISCHR(os.stat(device).st_mode):
            out[device] = device
    return out


ROLES = ["config", "import", "manifest", "migrate", "explain-config"]


@pytest.mark.parametrize("role", ROLES)
def test_special_files_as_every_input(role, special_files, workspace):
    """Each special file as a config, an import, a manifest, a file to migrate: exit 1 or 2
    with a message naming it, at once (no hang on a FIFO, no MemoryError on /dev/zero)."""
    good_config = workspace / "good.yaml"
    good_config.write_text("quant_cfg:\n  - {quantizer_name: '*', enable: false}\n")
    manifest = str(manifest_path("cnn"))
    for kind, path in special_files.items():
        if role == "config":
            argv = ("lint", path, "--manifest", manifest)
        elif role == "import":
            importing = workspace / "imports.yaml"
            importing.write_text(f"imports:\n  p: {path}\nquant_cfg:\n  - $import: p\n")
            argv = ("lint", str(importing))
        elif role == "manifest":
            argv = ("plan", str(good_config), "--manifest", path)
        elif role == "migrate":
            argv = ("migrate", path)
        else:
            argv = ("explain", path, "--manifest", manifest, "stem.weight_quantizer")
        status, out, err = run_cli(*argv, seconds=10.0)
        check_status(argv, status, err)
        assert status in (1, 2), f"{kind}: qconfig {' '.join(argv)} exited {status}"
        # a usage error on stderr, or lint's diagnostic (QC005) on stdout: either names the file
        assert os.path.basename(path) in out + err, f"{kind}: qconfig {' '.join(argv)}: {out}{err}"

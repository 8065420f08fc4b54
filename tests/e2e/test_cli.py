"""The ``qconfig`` command end to end: the installed script, real files, real exit codes.

Each subcommand runs at least once as a subprocess of the console script that ``pip install``
put next to this interpreter (that is what users, hooks and CI run); variations of one command
call ``qconfig.cli.main`` in-process, which is the same code without the interpreter start.
Migration is checked where it matters: the rewritten file keeps its comments and compiles to
the same plan as the legacy original on every example manifest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from qconfig import presets
from qconfig.cli import main
from qconfig.compile import CompileError, compile_plan
from qconfig.loader import load_config
from qconfig.manifest import Manifest
from qconfig.schema import KINDS, SCHEMA_FILES, render

ROOT = Path(__file__).resolve().parents[2]
QCONFIG = Path(sys.executable).parent / ("qconfig.exe" if os.name == "nt" else "qconfig")
MANIFESTS = sorted((ROOT / "examples" / "manifests").glob("*.json"))
LLAMA = ROOT / "examples" / "manifests" / "llama_decoder.json"
ANSI = "\x1b["

GOOD = """\
# a clean config
algorithm: max
quant_cfg:
  - quantizer_name: "*"
    enable: false
  - quantizer_name: "*weight_quantizer"
    cfg: {num_bits: 8, axis: 0}
  - quantizer_name: "*input_quantizer"
    cfg: {num_bits: 8, axis: null}
"""

# line 7, column 30 is where `num_bit` starts
BAD = """\
algorithm: max
quant_cfg:
  - quantizer_name: "*"
    enable: false
  - quantizer_name: "*weight_quantizer"
    cfg:
      {num_bits: 8, axis: 0, num_bit: 4}
"""

LEGACY_DEFAULT_FIRST = """\
# yaml-language-server: $schema=../schemas/qconfig-config.schema.json
# Legacy flat dict, "default" first: the Model Optimizer < 0.44 idiom.
algorithm: max # max calibration

quant_cfg:
  # everything off, then switch on what we want
  default: {enable: false}
  "*weight_quantizer": # weights
    num_bits: 8
    axis: 0 # per output channel
  # activations
  "*input_quantizer": { num_bits: 8, axis: null } # per tensor
  "*lm_head*": {enable: false}
# end of file
"""

# "default" placed last replaces everything before it: every quantizer ends INT8 per tensor.
LEGACY_DEFAULT_LAST = """\
quant_cfg:
  "*weight_quantizer": {num_bits: 4, block_sizes: {-1: 16, type: static}}
  "*input_quantizer": {num_bits: 8, axis: null, enable: false}  # inputs off
  # the trap: this replaces both entries above
  default: {num_bits: 8, axis: null}
algorithm: max
"""

LEGACY_SCOPED = """\
algorithm: {method: max}
quant_cfg:
  "*": {enable: false}
  nn.Linear: # only plain linears
    "*weight_quantizer":
      num_bits: 8
      axis: 0
      enable: true # explicit
    "*input_quantizer": {num_bits: 8, axis: null}
  nn.Embedding:
    "*": {enable: false}
"""

LEGACY_LIST = """\
algorithm: max
quant_cfg:
  # deny all first (already list form: must stay byte-identical)
  - { quantizer_name: "*", enable: false } # kept
  - "*weight_quantizer":   # W4 then FP8: a sequential quantizer
      - {num_bits: 4, block_sizes: {-1: 16, type: static}}
      - num_bits: e4m3
        axis: null
  - nn.Linear:
      "*input_quantizer": {num_bits: e4m3, axis: null}
  - { "*lm_head*": { enable: false } } # the head stays in high precision
  - quantizer_name: "*output_quantizer"
    enable: false
"""

LEGACY_RECIPE = """\
imports:
  ddq: qconfig/units/default_disabled_quantizers
---
metadata:
  recipe_type: ptq
  description: a legacy recipe
quantize:
  algorithm: max
  quant_cfg:
    default: {enable: false} # off
    "*weight_quantizer": {num_bits: 8, axis: 0}
    nn.Linear:
      # scoped inputs
      "*input_quantizer": {num_bits: 8, axis: null}
"""

LEGACY_JSON = """\
{
  "$schema": "../schemas/qconfig-config.schema.json",
  "algorithm": "max",
  "quant_cfg": {
    "default": {"enable": false},
    "*weight_quantizer": {"num_bits": 8, "axis": 0},
    "nn.Linear": {"*input_quantizer": {"num_bits": 8, "axis": null}}
  }
}
"""

LEGACY = {
    "default_first.yaml": LEGACY_DEFAULT_FIRST,
    "default_last.yaml": LEGACY_DEFAULT_LAST,
    "scoped.yaml": LEGACY_SCOPED,
    "single_key_list.yaml": LEGACY_LIST,
    "recipe.yaml": LEGACY_RECIPE,
    "flat.json": LEGACY_JSON,
}


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None):
    """The installed console script, as a user runs it (no colour variables inherited)."""
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    return subprocess.run(
        [str(QCONFIG), *map(str, args)],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def comments(text: str) -> Counter[str]:
    """Every YAML comment's text (a ``#`` at the start or after a blank), as a multiset."""
    out: Counter[str] = Counter()
    for line in text.splitlines():
        match = re.search(r"(?:^|\s)(#.*)$", line)
        if match:
            out[match.group(1).strip()] += 1
    return out


def plan_or_error(path: Path, manifest: Manifest) -> tuple[str, str]:
    """The plan JSON, or the compile errors: a migration must keep whichever it was."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the legacy originals
            config = load_config(path)
        return "plan", compile_plan(config, manifest).to_json()
    except CompileError as exc:
        return "error", "\n".join(f"{d.code} {d.message}" for d in exc.diagnostics)


def test_the_console_script_is_installed_and_helps():
    assert QCONFIG.is_file(), f"{QCONFIG} missing: pip install -e packages/qconfig"
    proc = run("--help", cwd=ROOT)
    assert proc.returncode == 0
    for command in ("lint", "schema", "plan", "explain", "presets", "migrate"):
        assert command in proc.stdout
    assert run(cwd=ROOT).returncode == 2  # no command: a usage error
    assert run("lint", cwd=ROOT).returncode == 2  # lint needs files


# --------------------------------------------------------------------------------------------
# lint
# --------------------------------------------------------------------------------------------
def test_lint_clean_files_exit_0(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    examples = sorted(str(p) for p in (ROOT / "examples" / "configs").iterdir())
    proc = run("lint", "good.yaml", *examples, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"All checks passed ({len(examples) + 1} files)."


def test_lint_error_is_located_and_exits_1_across_several_files(tmp_path):
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "bad.yaml", BAD)
    write(tmp_path, "legacy.yaml", LEGACY_DEFAULT_LAST)
    proc = run("lint", "good.yaml", "bad.yaml", "legacy.yaml", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "bad.yaml:7:30: QC003 Unknown field 'num_bit' (not allowed here). "
        "(quant_cfg[1].cfg.num_bit)"
    )
    # the next file's findings follow, in line order: the legacy dict, then `default` last
    assert [line.split(" ")[:2] for line in lines[1:4]] == [
        ["legacy.yaml:1:1:", "QC201"],  # the legacy dict
        ["legacy.yaml:1:1:", "QC204"],  # no deny-all entry first
        ["legacy.yaml:5:3:", "QC202"],  # `default` placed last
    ]
    assert lines[-1] == "Found 1 error and 3 warnings in 3 files."
    assert ANSI not in proc.stdout + proc.stderr  # not a terminal: no colour


def test_warnings_fail_only_with_strict(tmp_path, capsys, monkeypatch):
    write(tmp_path, "legacy.yaml", LEGACY_DEFAULT_FIRST)
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "legacy.yaml"]) == 0
    assert "warnings fail with --strict" in capsys.readouterr().out
    assert main(["lint", "--strict", "legacy.yaml"]) == 1
    assert main(["lint", "--strict", "--no-strict", "legacy.yaml"]) == 0
    write(tmp_path, "good.yaml", GOOD)
    assert main(["lint", "--strict", "good.yaml"]) == 0


def test_manifest_findings_and_json_output(tmp_path, capsys, monkeypatch):
    config = GOOD.replace('"*input_quantizer"', '"*mlpp*input_quantizer"')  # matches nothing
    write(tmp_path, "typo.yaml", config)
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "--format", "json", "typo.yaml"]) == 0
    assert json.loads(capsys.readouterr().out) == []  # without a model nothing is wrong

    proc = run("lint", "--format", "json", "--manifest", LLAMA, "typo.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # a warning: fails only with --strict
    found = json.loads(proc.stdout)
    assert [(d["code"], d["severity"], d["line"], d["column"]) for d in found] == [
        ("QC205", "warning", 8, 5)
    ]
    assert found[0]["file"] == "typo.yaml" and found[0]["path"] == "quant_cfg[2]"
    assert "'*mlpp*input_quantizer' matches no quantizer" in found[0]["message"]
    assert set(found[0]) == {
        "code", "severity", "message", "file", "line", "column", "path", "fixable"
    }  # fmt: skip
    assert main(["lint", "--strict", "--manifest", str(LLAMA), "typo.yaml"]) == 1
    capsys.readouterr()

    # exclusions that match nothing are info-level notes: hidden unless asked for
    noted = config + '  - {quantizer_name: "*vision_tower*", enable: false}\n'
    write(tmp_path, "noted.yaml", noted)
    assert main(["lint", "--format", "json", "--manifest", str(LLAMA), "noted.yaml"]) == 0
    assert [d["code"] for d in json.loads(capsys.readouterr().out)] == ["QC205"]
    assert (
        main(["lint", "--format=json", "--show-info", "--manifest", str(LLAMA), "noted.yaml"]) == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert [(d["code"], d["severity"]) for d in shown] == [("QC205", "warning"), ("QC205", "info")]
    assert main(["lint", "--show-info", "--strict", "--manifest", str(LLAMA), "noted.yaml"]) == 1


def test_github_annotations(tmp_path, capsys, monkeypatch):
    write(tmp_path, "bad.yaml", BAD)
    write(tmp_path, "legacy.yaml", LEGACY_DEFAULT_FIRST)
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "--format", "github", "bad.yaml", "legacy.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "::error file=bad.yaml,line=7,col=30,title=QC003::Unknown field 'num_bit' "
        "(not allowed here). (quant_cfg[1].cfg.num_bit)"
    )
    assert out[1].startswith("::warning file=legacy.yaml,line=5,col=1,title=QC201::")
    assert len(out) == 2  # annotations only, no summary line


def test_io_and_usage_errors_exit_2(tmp_path, capsys, monkeypatch):
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "bad.yaml", BAD)
    write(tmp_path, "broken.json", "{not json")
    monkeypatch.chdir(tmp_path)
    # a missing file is an I/O error even when the others have findings; the rest is linted
    assert main(["lint", "bad.yaml", "missing.yaml"]) == 2
    captured = capsys.readouterr()
    assert "missing.yaml: no such file" in captured.err
    assert "bad.yaml:7:30: QC003" in captured.out
    assert main(["lint", "--manifest", "missing.json", "good.yaml"]) == 2
    assert main(["lint", "--manifest", "broken.json", "good.yaml"]) == 2
    assert "broken.json: not valid JSON" in capsys.readouterr().err
    assert main(["lint", str(tmp_path)]) == 2  # a directory
    with pytest.raises(SystemExit) as exc:
        main(["lint", "--format", "xml", "good.yaml"])
    assert exc.value.code == 2


def _read_pty(fd: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path):
    import pty

    write(tmp_path, "bad.yaml", BAD)
    outputs = {}
    for label, extra in (("tty", {}), ("no_color", {"NO_COLOR": "1"})):
        master, slave = pty.openpty()
        base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        proc = subprocess.Popen(
            [str(QCONFIG), "lint", "bad.yaml"],
            cwd=tmp_path,
            env={**base, "TERM": "xterm", **extra},
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        outputs[label] = _read_pty(master)
        os.close(master)
        assert proc.wait(timeout=120) == 1
    assert ANSI in outputs["tty"] and "QC003" in outputs["tty"]
    assert ANSI not in outputs["no_color"] and "bad.yaml:7:30: QC003" in outputs["no_color"]


# --------------------------------------------------------------------------------------------
# schema, plan, explain, presets
# --------------------------------------------------------------------------------------------
def test_schema_command(tmp_path, capsys, monkeypatch):
    proc = run("schema", "--all", "-o", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for kind in KINDS:
        assert (tmp_path / "out" / SCHEMA_FILES[kind]).read_text(encoding="utf-8") == render(kind)
    monkeypatch.chdir(tmp_path)
    assert main(["schema", "--all", "-o", "out", "--check"]) == 0
    (tmp_path / "out" / SCHEMA_FILES["plan"]).write_text("{}\n", encoding="utf-8")
    assert main(["schema", "--all", "-o", "out", "--check"]) == 1
    assert "qconfig-plan.schema.json: stale" in capsys.readouterr().err
    assert main(["schema", "--kind", "manifest"]) == 0
    manifest_schema = json.loads(capsys.readouterr().out)
    assert manifest_schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert main(["schema", "--kind", "plan", "-o", "plan.schema.json"]) == 0
    assert (tmp_path / "plan.schema.json").read_text(encoding="utf-8") == render("plan")
    assert main(["schema", "--all"]) == 2  # --all needs -o DIR


def test_plan_command(tmp_path, capsys, monkeypatch):
    config = ROOT / "examples" / "configs" / "int8_default.yaml"
    proc = run("plan", config, "--manifest", LLAMA, "-o", "plan.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = compile_plan(load_config(config), Manifest.load(LLAMA)).to_json()
    assert (tmp_path / "plan.json").read_text(encoding="utf-8") == expected
    monkeypatch.chdir(tmp_path)
    assert main(["plan", str(config), "--manifest", str(LLAMA)]) == 0
    assert capsys.readouterr().out == expected
    assert main(["plan", str(config), "--manifest", str(LLAMA), "--summary"]) == 0
    summary = capsys.readouterr().out
    assert "INT8 per-channel" in summary and "calibration: max" in summary

    # a config that cannot be applied to this model: located compile error, exit 1
    write(
        tmp_path,
        "typo.yaml",
        GOOD.replace(
            "cfg: {num_bits: 8, axis: 0}",
            "parent_class: nn.Linaer\n    cfg: {num_bits: 8, axis: 0}",
        ),
    )
    assert main(["plan", "typo.yaml", "--manifest", str(LLAMA)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"^typo\.yaml:7:19: QC101 parent_class 'nn\.Linaer'", err, re.M), err
    write(tmp_path, "bad.yaml", BAD)
    assert main(["plan", "bad.yaml", "--manifest", str(LLAMA)]) == 1
    assert "bad.yaml:7:30: QC003" in capsys.readouterr().err
    assert main(["plan", "bad.yaml", "--manifest", "missing.json"]) == 2


def test_explain_command(tmp_path, capsys):
    config = ROOT / "examples" / "configs" / "int8_default.yaml"
    proc = run("explain", config, "--manifest", LLAMA, "lm_head.weight_quantizer", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("lm_head.weight_quantizer")
    assert any("'*lm_head*': toggle off" in line for line in lines)
    assert any(line.strip().startswith("final: disabled") for line in lines)
    assert main(["explain", str(config), "--manifest", str(LLAMA), "no.such_quantizer"]) == 2
    assert "no quantizer named 'no.such_quantizer'" in capsys.readouterr().err


def test_presets_command_prints_loadable_presets(tmp_path, capsys, monkeypatch):
    proc = run("presets", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.split() == presets.names()
    monkeypatch.chdir(tmp_path)
    for name in ("INT4_AWQ_CFG", "W4A8_AWQ_BETA_CFG", "NVFP4_DEFAULT_CFG"):
        for fmt in ("yaml", "json"):
            assert main(["presets", name, "--format", fmt]) == 0
            path = write(tmp_path, f"{name}.{fmt}", capsys.readouterr().out)
            assert load_config(path) == load_config(presets.get(name)), (name, fmt)
            assert main(["lint", "--strict", str(path)]) == 0
            capsys.readouterr()
    assert main(["presets", "FP8_KV_CFG", "--source"]) == 0
    assert capsys.readouterr().out == presets.path("FP8_KV_CFG").read_text(encoding="utf-8")
    assert main(["presets", "NO_SUCH_CFG"]) == 2


# --------------------------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------------------------
def test_migrate_prints_to_stdout_and_leaves_the_file(tmp_path):
    path = write(tmp_path, "legacy.yaml", LEGACY_DEFAULT_FIRST)
    proc = run("migrate", "legacy.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert path.read_text(encoding="utf-8") == LEGACY_DEFAULT_FIRST
    assert "4 legacy elements -> 4 entries" in proc.stderr
    assert proc.stdout == (
        "# yaml-language-server: $schema=../schemas/qconfig-config.schema.json\n"
        '# Legacy flat dict, "default" first: the Model Optimizer < 0.44 idiom.\n'
        "algorithm: max # max calibration\n"
        "\n"
        "quant_cfg:\n"
        "  # everything off, then switch on what we want\n"
        '  - {quantizer_name: "*", enable: false}\n'
        '  - quantizer_name: "*weight_quantizer" # weights\n'
        "    cfg:\n"
        "      num_bits: 8\n"
        "      axis: 0 # per output channel\n"
        "  # activations\n"
        '  - {quantizer_name: "*input_quantizer", cfg: {num_bits: 8, axis: null}} # per tensor\n'
        '  - {quantizer_name: "*lm_head*", enable: false}\n'
        "# end of file\n"
    )


def test_migrate_write_keeps_comments_and_untouched_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, text in LEGACY.items():
        path = write(tmp_path, name, text)
        assert main(["migrate", "--write", name]) == 0, capsys.readouterr().err
        assert "migrated" in capsys.readouterr().err
        migrated = path.read_text(encoding="utf-8")
        assert migrated != text
        assert comments(migrated) == comments(text), name
        # no legacy form is left, and a second run changes nothing
        assert main(["lint", "--format", "json", name]) == 0
        codes = {d["code"] for d in json.loads(capsys.readouterr().out)}
        assert not codes & {"QC201", "QC202"}, (name, codes)
        assert main(["migrate", "--write", name]) == 0
        assert "already list form" in capsys.readouterr().err
        assert path.read_text(encoding="utf-8") == migrated
    # YAML lines outside the converted elements are byte-identical
    migrated = (tmp_path / "single_key_list.yaml").read_text(encoding="utf-8").splitlines()
    for kept in (
        "  # deny all first (already list form: must stay byte-identical)",
        '  - { quantizer_name: "*", enable: false } # kept',
        '  - quantizer_name: "*output_quantizer"',
    ):
        assert kept in migrated
    assert '  - {quantizer_name: "*lm_head*", enable: false} # the head stays in high precision' in migrated  # fmt: skip
    recipe = (tmp_path / "recipe.yaml").read_text(encoding="utf-8")
    assert recipe.startswith(LEGACY_RECIPE.split("  quant_cfg:")[0])  # header doc, metadata
    assert json.loads((tmp_path / "flat.json").read_text(encoding="utf-8"))["quant_cfg"][0] == {
        "quantizer_name": "*",
        "enable": False,
    }


def test_migrate_keeps_the_compiled_plan_on_every_example_manifest(tmp_path):
    assert len(MANIFESTS) >= 3, "examples/manifests/*.json missing"
    for name, text in LEGACY.items():
        write(tmp_path, name, text)
        write(tmp_path, "original_" + name, text)
    proc = run("migrate", "--write", *LEGACY, cwd=tmp_path)  # several files at once
    assert proc.returncode == 0, proc.stderr
    manifests = [Manifest.load(path) for path in MANIFESTS]
    for name, text in LEGACY.items():
        migrated = tmp_path / name
        assert migrated.read_text(encoding="utf-8") != text, name
        compiled = 0
        for manifest_path, manifest in zip(MANIFESTS, manifests, strict=True):
            before = plan_or_error(tmp_path / ("original_" + name), manifest)
            assert plan_or_error(migrated, manifest) == before, (name, manifest_path.name)
            compiled += before[0] == "plan"
        assert compiled >= 3, f"{name} compiles on too few manifests to prove anything"


def test_default_last_stays_last(tmp_path):
    """The check above can fail: moving `default` first (the tempting fix) changes the plan."""
    migrated = write(tmp_path, "default_last.yaml", LEGACY_DEFAULT_LAST)
    assert main(["migrate", "--write", str(migrated)]) == 0
    moved_first = write(
        tmp_path,
        "moved_first.yaml",
        "algorithm: max\nquant_cfg:\n"
        '  - {quantizer_name: "*", cfg: {num_bits: 8, axis: null}}\n'
        '  - {quantizer_name: "*weight_quantizer", cfg: {num_bits: 4, block_sizes: {-1: 16, type: static}}}\n'
        '  - {quantizer_name: "*input_quantizer", cfg: {num_bits: 8, axis: null}, enable: false}\n',
    )
    manifest = Manifest.load(LLAMA)
    plan = compile_plan(load_config(migrated), manifest)
    assert plan_or_error(moved_first, manifest) != ("plan", plan.to_json())
    q_proj = plan.quantizers["model.layers.0.self_attn.q_proj.weight_quantizer"]
    assert q_proj.enable and q_proj.attributes.num_bits == 8 and q_proj.attributes.axis is None


def test_migrate_errors(tmp_path, capsys, monkeypatch):
    write(tmp_path, "a.yaml", LEGACY_SCOPED)
    write(tmp_path, "b.yaml", LEGACY_DEFAULT_FIRST)
    write(tmp_path, "bad.yaml", BAD.replace("  - quantizer_name", "  - quantizer_nam", 1))
    monkeypatch.chdir(tmp_path)
    assert main(["migrate", "a.yaml", "b.yaml"]) == 2  # several files need --write
    assert main(["migrate", "bad.yaml"]) == 1  # does not load: nothing to compare against
    assert "does not load" in capsys.readouterr().err
    assert main(["migrate", "missing.yaml"]) == 2
    assert main(["migrate", "--write", "a.yaml", "b.yaml"]) == 0
    for name in ("a.yaml", "b.yaml"):
        assert "quantizer_name" in (tmp_path / name).read_text(encoding="utf-8")


def test_skip_non_configs_leaves_other_yaml_and_json_alone(tmp_path, capsys, monkeypatch):
    """What the pre-commit hook relies on: it is handed every YAML/JSON file of a repository."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "ci.yml", "on: push\njobs: {}\n")
    write(tmp_path, "package.json", '{"name": "x", "version": "1.0.0"}\n')
    write(tmp_path, "manifest.json", LLAMA.read_text(encoding="utf-8"))
    config = ROOT / "examples" / "configs" / "int8_default.yaml"
    assert main(["plan", str(config), "--manifest", str(LLAMA), "-o", "plan.json"]) == 0
    unit = ROOT / "packages/qconfig/src/qconfig/presets/units/default_disabled_quantizers.yaml"
    write(tmp_path, "bad.yaml", BAD)
    others = ["ci.yml", "package.json", "manifest.json", "plan.json"]
    assert main(["lint", *others]) == 1  # none of them is a config
    capsys.readouterr()
    assert main(["lint", "--skip-non-configs", *others, str(unit), "bad.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bad.yaml:7:30: QC003")
    assert out[-1] == "Found 1 error in 2 files."  # the unit snippet and bad.yaml


def test_lean_start(tmp_path):
    """The start-up work `qconfig lint` skips (bench/bench_lint.py measures what it costs):
    `--help` imports no pydantic, and lint never scans installed distributions for pydantic
    plugins (importlib.metadata and the email/zipfile/csv modules it pulls in)."""
    write(tmp_path, "good.yaml", GOOD)
    code = (
        "import sys\n"
        "from qconfig.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('pydantic' in sys.modules)\n"
        "assert main(['lint', 'good.yaml']) == 0\n"
        "print(sorted(m for m in ('importlib.metadata', 'email', 'zipfile') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "[]" and lines[-3] == "False", proc.stdout

"""Hostile and wrong input to the config loader: a located error every time (issue 11).

Every case here used to end in a traceback, a hang, a ``RecursionError``, gigabytes of memory
or a silently wrong config. Each must now be one ``ConfigError`` whose diagnostic names the
code, the file, the line and the column (and the JSON path where there is one), and a bomb
must be refused for less than 200 MB. The limits are :mod:`qconfig.loader.limits`'s
(docs/writing-configs.md, "Limits").
"""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import qconfig
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from qconfig.cli import main
from qconfig.errors import ConfigError, format_path
from qconfig.loader import limits as limits_module
from qconfig.loader import load_document, load_recipe, load_snippet, sniff
from qconfig.loader.json_source import parse_json
from qconfig.loader.limits import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_IMPORT_DEPTH,
    MAX_VALUES,
    LoadBudget,
    measure,
)
from qconfig.loader.yaml_source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
OFF = "quant_cfg:\n  - {quantizer_name: '*', enable: false}\n"
UNIT_HEADER = "# modelopt-schema: qconfig.QuantizerCfgListConfig\n"


def _error(src, **kwargs) -> tuple[str, str | None, int | None, int | None, str, str]:
    """The one diagnostic ``load_config(src)`` raises, as (code, file, line, col, path, msg)."""
    with pytest.raises(ConfigError) as info:
        qconfig.load_config(src, **kwargs)
    (d,) = info.value.diagnostics
    return d.code, d.file, d.line, d.column, d.path, d.message


def _alias_bomb(levels: int = 9) -> str:
    """A billion-laughs document of ~500 bytes: 10**levels values when expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join([*lines, f"quant_cfg: *a{levels - 1}"]) + "\n"


_PEAK = """
import resource
try:  # the peak of this program itself: ru_maxrss keeps a forking parent's size across exec
    with open("/proc/self/status") as status:
        print(next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")))
except (OSError, StopIteration):
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_mb(code: str, cwd: Path) -> tuple[float, str]:
    """Run ``code`` in a fresh interpreter; its peak RSS in MB (``VmHWM``) and stdout."""
    script = code + _PEAK
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    *out, peak = proc.stdout.strip().splitlines()
    return int(peak) / 1024, "\n".join(out)


# ---------------------------------------------------------------------------------------------
# 1. YAML tags and values their tag cannot read


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("!!int abc", "'abc' is not a valid !!int"),
        ("!!bool maybe", "'maybe' is not a valid !!bool"),
        ("!!timestamp 2001-99-99", "not a valid !!timestamp: month must be in 1..12"),
        ("2001-13-01", "not a valid !!timestamp"),  # implicitly a date, and not a valid one
        ("!!timestamp x", "'x' is not a valid !!timestamp"),  # PyYAML: AttributeError
        ("!!float x", "'x' is not a valid !!float"),
        ("!foo bar", "could not determine a constructor for the tag '!foo'"),
        ("!!binary '@@@'", "the tag '!!binary'"),
        ("!!python/object:os.system {}", "the tag '!!python/object:os.system'"),
        ("!!set {a, b}", "the tag '!!set'"),
        ("!!omap [a: 1]", "the tag '!!omap'"),
        ("!foo [1, 2]", "the tag '!foo'"),
    ],
)
def test_bad_tags_and_tagged_values_are_located_errors(tmp_path, value, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(f"{OFF}algorithm: {value}\n", encoding="utf-8")
    code, file, line, column, _, message = _error(path)
    assert (code, file, line, column) == ("QC001", str(path), 3, 12)
    assert fragment in message


def test_a_bad_tag_through_the_cli_is_a_finding_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(f"{OFF}algorithm: !!int abc\n", encoding="utf-8")
    assert main(["lint", "c.yaml"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("c.yaml:3:12: QC001 YAML value 'abc' is not a valid !!int")
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize(
    ("src", "line", "column"),
    [
        (f"{OFF}a: caf\u00e9\x00\n", 3, 8),  # a control character (libyaml counts bytes)
        (f"{OFF}a: \x07\n", 3, 4),
        (f"{OFF}a: \ud800\n", 3, 4),  # Python text with a lone surrogate (not UTF-8)
        ('{"quant_cfg": [],\n "a": "\\ud800"}', 2, 7),  # a JSON escape making one
        ('{"quant_cfg": [],\n "\ud800": 1}', 2, 2),
    ],
)
def test_characters_that_are_not_text_are_located(src, line, column):
    code, _, got_line, got_column, _, message = _error(src)
    assert (code, got_line, got_column) == ("QC001", line, column), message
    # a complete surrogate pair is one character, and fine
    assert load_document('{"quant_cfg": [], "a": "\\ud83d\\ude00"}').data["a"] == "\U0001f600"


def test_python_strings_with_lone_surrogates_are_refused_at_their_path():
    code, _, _, _, path, message = _error({"quant_cfg": [{"quantizer_name": "\ud800"}]})
    assert (code, path) == ("QC001", "quant_cfg[0].quantizer_name")
    assert "lone surrogate" in message


def test_a_snippet_given_as_a_config_points_at_its_schema_comment():
    text = "# a list of entries\n# modelopt-schema: qconfig.QuantizerCfgListConfig\n- {}\n"
    code, _, line, column, _, message = _error(text)
    assert (code, line, column) == ("QC006", 2, 1) and "load_snippet" in message
    with pytest.raises(ConfigError) as info:
        load_recipe(OFF)
    assert (info.value.diagnostics[0].line, info.value.diagnostics[0].column) == (1, 1)


def test_validation_messages_do_not_echo_huge_values():
    """A 100 KB value makes a one-line diagnostic, not a 100 KB one (validators quote it)."""
    for text in (f"{OFF}algorithm: {'x' * 100_000}\n", f"quant_cfg: [{'x' * 100_000}]\n"):
        code, _, line, _, _, message = _error(text)
        assert code == "QC003" and line is not None
        assert len(message) < 400 and "(100,000 characters)" in message


# ---------------------------------------------------------------------------------------------
# 2. Numbers: integers beyond Python's int-string limit, floats that overflow


def test_integer_literals_beyond_4300_digits_are_located(tmp_path):
    digits = "9" * 5000
    (tmp_path / "c.yaml").write_text(f"{OFF}effective_bits: {digits}\n", encoding="utf-8")
    (tmp_path / "c.json").write_text(f'{{"quant_cfg": [],\n "x": -{digits}}}', encoding="utf-8")
    (tmp_path / "h.yaml").write_text(f"{OFF}effective_bits: 0x{'f' * 4000}\n", encoding="utf-8")
    for name, line, column in (("c.yaml", 3, 17), ("c.json", 2, 7), ("h.yaml", 3, 17)):
        code, file, got_line, got_column, _, message = _error(tmp_path / name)
        assert (code, file, got_line, got_column) == ("QC001", str(tmp_path / name), line, column)
        assert message.startswith("Integer too large") and "4,300" in message
    code, *_, path, message = _error({"quant_cfg": [], "effective_bits": 10**5000})
    assert (code, path) == ("QC001", "effective_bits") and "Integer too large" in message


def test_an_integer_at_the_limit_reaches_validation():
    # 4,300 digits is still an integer Python prints: validation reports it, nothing crashes
    code, *_, path, _ = _error(f"{OFF}effective_bits: {'9' * 4300}\n")
    assert (code, path) == ("QC003", "effective_bits")


def test_float_literals_that_overflow_are_located_and_inf_is_left_to_validation():
    code, _, line, column, _, message = _error('{"quant_cfg": [],\n "effective_bits": 1e999}')
    assert (code, line, column) == ("QC001", 2, 20) and "Number too large: 1e999" in message
    code, _, line, column, _, message = _error(f"{OFF}effective_bits: 1.0e+999\n")
    assert (code, line, column) == ("QC001", 3, 17) and "Number too large" in message
    # written as infinity on purpose: the field's own validation decides
    code, *_, path, message = _error(f"{OFF}effective_bits: .inf\n")
    assert (code, path) == ("QC003", "effective_bits")


# ---------------------------------------------------------------------------------------------
# 3. Mapping keys that are not strings


@pytest.mark.parametrize(
    ("text", "line", "column", "path", "kind"),
    [
        (f"{OFF}null: 1\n", 3, 1, "", "null"),
        (f"{OFF}~: 1\n", 3, 1, "", "null"),
        (f"{OFF}? \n: 1\n", 3, 2, "", "null"),  # an empty key
        (f"{OFF}1.5: 1\n", 3, 1, "", "float"),
        (f"{OFF}on: 1\n", 3, 1, "", "bool"),
        (f"{OFF}2001-01-01: 1\n", 3, 1, "", "date"),
        ("quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: 8, true: 1}\n", 3, 24,
         "quant_cfg[0].cfg", "bool"),
        ("quant_cfg:\n  - quantizer_name: '*'\n    cfg: {block_sizes: {null: 16}}\n", 3, 25,
         "quant_cfg[0].cfg.block_sizes", "null"),
    ],
)  # fmt: skip
def test_non_string_keys_are_located_at_the_key(text, line, column, path, kind):
    code, _, got_line, got_column, got_path, message = _error(text)
    assert (code, got_line, got_column, got_path) == ("QC001", line, column, path)
    assert f"is read by YAML as {kind}" in message and "quote it" in message


def test_sequence_keys_are_refused_and_integer_keys_are_delivered():
    code, _, line, column, _, message = _error(f"{OFF}? [1, 2]\n: 1\n")
    assert (code, line, column) == ("QC001", 3, 3) and "keys must be scalars" in message
    config = qconfig.load_config(
        "quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: 4, block_sizes: {-1: 16}}\n"
    )
    assert config.quant_cfg[0].cfg.block_sizes == {-1: 16}
    # integer keys reach normalization, which says what is wrong with them (no traceback)
    for text in ("quant_cfg: {1: 8}\n", "quant_cfg:\n  - {1: {enable: false}, x: 1}\n"):
        with pytest.raises(ConfigError):
            qconfig.load_config(text)


def test_python_mappings_with_non_string_keys_name_the_path():
    for key in (None, 1.5, True, (1, 2)):
        code, file, line, _, path, message = _error({"quant_cfg": [{"quantizer_name": "*",
                                                                     "cfg": {key: 1}}]})  # fmt: skip
        assert (code, file, line, path) == ("QC001", None, None, "quant_cfg[0].cfg")
        assert f"Mapping key {key!r}" in message


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(min_value=-(10**6000), max_value=10**6000),
            st.floats(),
            st.text(max_size=6),
            st.tuples(st.integers(), st.none()),
        ),
        max_size=6,
    )
)
def test_format_path_shows_any_part(parts):
    shown = format_path(parts)
    assert isinstance(shown, str)
    assert all(f"[{p}]" in shown for p in parts if type(p) is int and p.bit_length() < 14_000)


# ---------------------------------------------------------------------------------------------
# 4. Nesting depth, in files, mappings and through imports


def _nested_yaml_block(levels: int) -> str:
    """``quant_cfg`` followed by ``levels - 1`` block sequences inside one another."""
    return "quant_cfg:\n" + "".join("  " * i + "-\n" for i in range(1, levels))


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 500, 1000])
def test_deep_nesting_is_one_located_error(levels):
    flow_depth = min(levels, 900)  # libyaml refuses flow nesting past 1000 itself
    cases = {
        "yaml block": _nested_yaml_block(levels),
        "yaml flow": "quant_cfg: " + "[" * (flow_depth - 1) + "]" * (flow_depth - 1) + "\n",
        "json": '{"quant_cfg": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}",
    }
    for label, text in cases.items():
        code, _, line, column, _, message = _error(text)
        assert code == "QC001", label
        assert line is not None and column is not None, label
        assert f"more than {MAX_DEPTH} mappings and lists" in message, (label, message)


def test_depth_at_the_limit_loads_and_validates_without_recursion_errors():
    # MAX_DEPTH levels: the root mapping and MAX_DEPTH - 1 lists; validation then reports it
    for text in (
        _nested_yaml_block(MAX_DEPTH),
        '{"quant_cfg": ' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}",
    ):
        assert measure(load_document(text).data)[1] == MAX_DEPTH
        code, *_ = _error(text)
        assert code == "QC003"


def test_deep_and_self_referencing_python_mappings_are_refused():
    deep: dict = {"quant_cfg": []}
    node = deep["quant_cfg"]
    for _ in range(2000):
        node.append([])
        node = node[0]
    code, _, _, _, path, message = _error(deep)
    assert code == "QC001" and "Nesting too deep" in message
    assert path.startswith("quant_cfg[0][0]")
    loop: dict = {"quant_cfg": []}
    loop["quant_cfg"].append(loop)
    assert _error(loop)[0] == "QC001"


def test_a_python_mapping_that_shares_lists_is_counted_at_every_use():
    """The Python form of an alias bomb: ten references to one list, nine levels deep."""
    shared: list = ["x"] * 10
    for _ in range(8):
        shared = [shared] * 10
    code, _, _, _, path, message = _error({"quant_cfg": shared})
    assert code == "QC001" and path.startswith("quant_cfg[0]")
    assert message.startswith(f"Too many values: the mapping has more than {MAX_VALUES:,}")


def test_imports_cannot_nest_past_the_depth_limit(tmp_path):
    """Each file is within the limit, but a snippet merged in deep enough goes over it: the
    mapping at level MAX_DEPTH takes a snippet that nests one level more (block_sizes)."""
    (tmp_path / "attrs.yaml").write_text(
        "# modelopt-schema: qconfig.QuantizerAttributeConfig\nnum_bits: 4\nblock_sizes: {-1: 16}\n",
        encoding="utf-8",
    )
    lists = MAX_DEPTH - 2  # the root mapping, the lists, then the mapping with the $import
    wrapper = "[" * lists + "{$import: attrs, axis: null}" + "]" * lists  # merged, not spliced
    path = tmp_path / "c.yaml"
    path.write_text(f"imports: {{attrs: attrs.yaml}}\n{OFF}algorithm: {wrapper}\n", "utf-8")
    code, file, line, column, got_path, message = _error(path)
    assert (code, file, line, column) == ("QC001", str(path), 4, 12 + lists + 10)
    assert got_path.endswith("['$import']") and "Nesting too deep" in message
    shallower = wrapper.replace("[[", "[", 1).replace("]]", "]", 1)
    path.write_text(f"imports: {{attrs: attrs.yaml}}\n{OFF}algorithm: {shallower}\n", "utf-8")
    with pytest.raises(ConfigError) as info:  # within the limit: merged, then validated
        qconfig.load_config(path)
    assert {d.code for d in info.value.diagnostics} == {"QC003"}


# ---------------------------------------------------------------------------------------------
# 4b. Import chains


def _chain(tmp_path: Path, length: int) -> Path:
    """``f0.yaml`` imports ``f1.yaml`` ... imports ``f{length-1}.yaml``: ``length`` files."""
    last = length - 1
    entry = "- {quantizer_name: '*', enable: false}\n"
    (tmp_path / f"f{last}.yaml").write_text(UNIT_HEADER + entry, encoding="utf-8")
    for i in range(last - 1, 0, -1):
        text = f"{UNIT_HEADER}imports:\n  prev: f{i + 1}.yaml\n---\n- $import: prev\n"
        (tmp_path / f"f{i}.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "f0.yaml").write_text(
        "imports:\n  prev: f1.yaml\nquant_cfg:\n  - $import: prev\n", encoding="utf-8"
    )
    return tmp_path / "f0.yaml"


def test_an_import_chain_at_the_limit_loads(tmp_path):
    config = qconfig.load_config(_chain(tmp_path, MAX_IMPORT_DEPTH))
    assert [e.quantizer_name for e in config.quant_cfg] == ["*"]


@pytest.mark.parametrize("length", [MAX_IMPORT_DEPTH + 1, 600])
def test_long_import_chains_stop_at_the_import_that_goes_too_far(tmp_path, length):
    code, file, line, column, path, message = _error(_chain(tmp_path, length))
    last_ok = MAX_IMPORT_DEPTH - 1  # the file whose import goes one too far
    assert (code, file, line, column) == ("QC004", str(tmp_path / f"f{last_ok}.yaml"), 3, 9)
    assert path == "imports.prev"
    assert f"more than {MAX_IMPORT_DEPTH} files in one chain" in message
    assert "f0.yaml -> f1.yaml -> f2.yaml -> ... ->" in message


# ---------------------------------------------------------------------------------------------
# 5. Special files as configs and as imports


def _link(directory: Path, device: str) -> str:
    """A ``.yaml`` name for a device (an import without suffix would look for ``.yml``)."""
    link = directory / (Path(device).name + ".yaml")
    link.symlink_to(device)
    return str(link)


def _importer(tmp_path: Path, target: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"imports:\n  unit: {target}\n{OFF}  - $import: unit\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make", "fragment", "where"),
    [
        (lambda d: _link(d, "/dev/zero"), "is a character device, not a regular file", None),
        (lambda d: _link(d, "/dev/urandom"), "is a character device, not a regular file", None),
        (lambda d: os.mkfifo(d / "pipe.yaml") or str(d / "pipe.yaml"), "is a FIFO", None),
        (lambda d: (d / "dir.yaml").mkdir() or str(d / "dir.yaml"), "is a directory", None),
        (
            lambda d: (
                (d / "latin1.yaml").write_bytes(b"quant_cfg: []  # caf\xe9\n")
                and str(d / "latin1.yaml")
            ),
            "not valid UTF-8 (byte 0xe9 at offset 20)",
            (1, 21),  # the file itself: at the byte; as an import: at the import
        ),
    ],
    ids=["dev-zero", "dev-urandom", "fifo", "directory", "non-utf8"],
)
def test_special_files_as_configs_and_imports_are_located_io_errors(
    tmp_path, make, fragment, where
):
    target = make(tmp_path)
    for device in ("/dev/zero", "/dev/urandom"):  # named directly, too
        assert _error(device)[:2] == ("QC005", device)
    code, file, line, column, _, message = _error(target)  # as the config itself
    assert (code, file, (line, column)) == ("QC005", target, where or (None, None))
    assert fragment in message
    importer = _importer(tmp_path, target)  # as an import: at the import's line and column
    code, file, line, column, path, message = _error(importer)
    assert (code, file, line, column, path) == ("QC005", str(importer), 2, 9, "imports.unit")
    assert fragment in message


def test_a_fifo_never_blocks_a_load(tmp_path):
    """Opening a FIFO without a writer blocks for ever unless done without blocking: run the
    load in a child with a deadline, so a regression fails instead of hanging the suite."""
    os.mkfifo(tmp_path / "pipe.yaml")
    _importer(tmp_path, "pipe.yaml")
    code = (
        "import qconfig\n"
        "for src in ('pipe.yaml', 'c.yaml'):\n"
        "    try:\n"
        "        qconfig.load_config(src)\n"
        "    except qconfig.ConfigError as exc:\n"
        "        print(exc.diagnostics[0].code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.split() == ["QC005", "QC005"], proc.stderr


def test_unsearchable_directory_monkeypatched_permission_error(tmp_path, monkeypatch):
    """PermissionError from ``open`` (what a non-root user meets; see the test below for the
    real thing), simulated by making ``os.open`` refuse the one path."""
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "unit.yaml").write_text(UNIT_HEADER + "- {quantizer_name: '*', enable: false}\n")
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if str(path).startswith(str(locked)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    code, *_, message = _error(locked / "unit.yaml")
    assert code == "QC005" and "permission denied" in message
    importer = _importer(tmp_path, "locked/unit.yaml")
    code, file, line, column, _, message = _error(importer)
    assert (code, file, line, column) == ("QC005", str(importer), 2, 9)
    assert "permission denied" in message


@pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("setpriv")),
    reason="needs root and setpriv to run a check as the user 'nobody'",
)
def test_unsearchable_directory_as_nobody():
    """The real PermissionError: files inside a directory ``nobody`` may not search, read by
    a child running as ``nobody`` (root may search anything, so root cannot show it)."""
    base = Path(tempfile.mkdtemp(prefix="qconfig-perm-"))
    try:
        base.chmod(0o755)
        locked = base / "locked"
        locked.mkdir(mode=0o700)
        (locked / "c.yaml").write_text(OFF, encoding="utf-8")
        (locked / "unit.yaml").write_text(UNIT_HEADER + "- {quantizer_name: '*', enable: false}\n")
        importer = _importer(base, "locked/unit.yaml")
        importer.chmod(0o644)
        code = (
            "import sys, qconfig\n"
            "for src in sys.argv[1:]:\n"
            "    try:\n"
            "        qconfig.load_config(src)\n"
            "    except qconfig.ConfigError as exc:\n"
            "        d = exc.diagnostics[0]\n"
            "        print(d.code, d.line, d.column, d.message)\n"
        )
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        files = [str(locked / "c.yaml"), str(importer), str(locked)]
        proc = subprocess.run(
            [*nobody, sys.executable, "-c", code, *files],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        lines = proc.stdout.splitlines()
        assert len(lines) == 3, proc.stdout + proc.stderr
        assert (
            lines[0].startswith("QC005 None None Cannot read") and "permission denied" in lines[0]
        )
        assert lines[1].startswith("QC005 2 9 Cannot read") and "permission denied" in lines[1]
        assert lines[2].startswith("QC005")  # the directory itself
    finally:
        shutil.rmtree(base)


def test_special_path_strings_are_read_as_paths_not_parsed_as_yaml():
    for src in ("/dev/zero", "/dev/null", str(ROOT / "examples")):
        code, file, *_ = _error(src)
        assert (code, file) == ("QC005", src)


# ---------------------------------------------------------------------------------------------
# 6. One budget for a whole load: values built (aliases and imports expanded), bytes read


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path):
    code, _, line, column, _, message = _error(_alias_bomb())
    assert code == "QC001" and (line, column) != (None, None)
    assert "expanding this file's YAML aliases builds more than 100,000 values" in message
    (tmp_path / "bomb.yaml").write_text(_alias_bomb(), encoding="utf-8")
    peak, out = _peak_mb(
        "import qconfig\ntry:\n    qconfig.load_config('bomb.yaml')\n"
        "except qconfig.ConfigError as e:\n    print(e.diagnostics[0].code)\n",
        tmp_path,
    )
    assert out == "QC001" and peak < 200, peak


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("quant_cfg: &a [*a]\n", 1, 16, "Recursive YAML alias"),
        ("quant_cfg: &a [&a 1, *a]\n", 1, 16, "duplicate anchor"),  # not "recursive"
        (f"{OFF}x: &a [1]\n---\ny: *a\n", 5, 4, "undefined alias"),  # anchors are per document
    ],
)
def test_alias_edge_cases_are_located(text, line, column, fragment):
    code, _, got_line, got_column, _, message = _error(text)
    assert (code, got_line, got_column) == ("QC001", line, column) and fragment in message


def test_a_large_plain_file_names_the_limit_it_hit_not_aliases(tmp_path):
    items = ", ".join(["1"] * MAX_VALUES)
    for name, text in (
        ("big.yaml", f"quant_cfg: []\nalgorithm: [{items}]\n"),
        ("big.json", f'{{"quant_cfg": [],\n"algorithm": [{items}]}}'),
    ):
        (tmp_path / name).write_text(text, encoding="utf-8")
        code, _, line, column, _, message = _error(tmp_path / name)
        assert code == "QC001" and line == 2 and column is not None, message
        assert f"this file has more than {MAX_VALUES:,} values" in message
        assert "alias" not in message.split(";")[0]


def _multiplying_imports(tmp_path: Path, files: int, times: int) -> Path:
    """Each file imports the previous one ``times`` times: tiny files, ``times**files``
    entries (the issue's case: 23 files, twice each, 4 GB)."""
    entry = "- {quantizer_name: '*', enable: false}\n"
    (tmp_path / "d0.yaml").write_text(UNIT_HEADER + entry, encoding="utf-8")
    uses = "- $import: p\n" * times
    for i in range(1, files):
        text = f"{UNIT_HEADER}imports:\n  p: d{i - 1}.yaml\n---\n{uses}"
        (tmp_path / f"d{i}.yaml").write_text(text, encoding="utf-8")
    top = tmp_path / "top.yaml"
    top.write_text(f"imports:\n  p: d{files - 1}.yaml\nquant_cfg:\n  - $import: p\n")
    return top


_LOAD_TOP = (
    "import qconfig\ntry:\n    qconfig.load_config('top.yaml')\n"
    "except qconfig.ConfigError as e:\n    print(e.diagnostics[0].code)\n"
)


def test_an_import_bomb_is_refused_under_one_budget(tmp_path):
    top = _multiplying_imports(tmp_path, files=12, times=4)  # 4**12 entries asked for
    code, file, line, column, path, message = _error(top)
    assert code == "QC001" and file is not None and file.endswith(".yaml")
    assert (line, column) != (None, None) and "$import" in path
    assert "importing 'p'" in message and f"{MAX_VALUES:,} values" in message
    peak, out = _peak_mb(_LOAD_TOP, tmp_path)
    assert out == "QC001" and peak < 200, peak


def test_the_issues_import_bomb_stops_at_the_import_depth(tmp_path):
    _multiplying_imports(tmp_path, files=23, times=2)
    peak, out = _peak_mb(_LOAD_TOP, tmp_path)
    assert out == "QC004" and peak < 200, peak


def test_bytes_read_are_budgeted_across_imports(tmp_path):
    comment = "#" + "x" * 1023 + "\n"
    filler = (
        UNIT_HEADER + comment * (MAX_BYTES // 1024 // 3) + "- {quantizer_name: a, enable: false}\n"
    )
    names = [f"u{i}" for i in range(4)]
    for name in names:
        (tmp_path / f"{name}.yaml").write_text(filler, encoding="utf-8")
    imports = "".join(f"  {n}: {n}.yaml\n" for n in names)
    top = tmp_path / "top.yaml"
    top.write_text(f"imports:\n{imports}quant_cfg:\n  - $import: u0\n", encoding="utf-8")
    code, file, line, column, _, message = _error(top)
    assert (code, file, line, column) == ("QC005", str(top), 4, 7)  # the third import
    assert f"{MAX_BYTES:,} bytes a config and its imports may read together" in message
    big = tmp_path / "big.yaml"
    big.write_text(comment * (MAX_BYTES // 1024 + 1), encoding="utf-8")
    code, file, *_, message = _error(big)
    assert (code, file) == ("QC005", str(big)) and f"the limit is {MAX_BYTES:,}" in message


def test_the_value_limit_is_exact(monkeypatch):
    monkeypatch.setattr(limits_module, "MAX_VALUES", 40)
    # the mapping, its 2 keys, 2 lists and the items: 5 + items values
    assert load_document(f"quant_cfg: []\nx: [{', '.join(['1'] * 35)}]\n").data
    code, *_, message = _error(f"quant_cfg: []\nx: [{', '.join(['1'] * 36)}]\n")
    assert code == "QC001" and "more than 40 values" in message


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=8),
)
_DATA = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.text(string.ascii_letters, min_size=1, max_size=6) | st.integers(-9, 9),
            children,
            max_size=4,
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_DATA, st.booleans())
def test_every_source_charges_what_it_builds(data, shared):
    """The YAML events, the JSON tokens and a Python mapping are each measured before anything
    is built; all three must count exactly the values ``measure`` finds in what was built, and
    YAML aliases (``shared``: the same object twice, dumped as an anchor and an alias) count
    once per expansion."""
    doc = {"k": data, "j": data} if shared else {"k": data}
    for text, parse in (
        (yaml.safe_dump(doc), parse_yaml),
        (json.dumps(doc), parse_json),
    ):
        budget = LoadBudget()
        parse(text, None, Path("."), budget)
        assert budget.values == measure(doc)[0], text
    budget = LoadBudget()
    from qconfig.loader.convert import convert_mapping

    convert_mapping(doc, budget)
    assert budget.values == measure(doc)[0]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, MAX_DEPTH + 3), st.sampled_from(["[", "{"]))
def test_depth_is_refused_exactly_past_the_limit(levels, bracket):
    """A document nested ``levels`` deep loads iff ``levels <= MAX_DEPTH``, in YAML, JSON and
    as a Python mapping alike."""
    data: object = 1
    for _ in range(levels - 1):
        data = [data] if bracket == "[" else {"a": data}
    data = {"x": data}
    text = json.dumps(data)
    assert measure(data)[1] == min(levels, MAX_DEPTH + 1)  # measure stops past the limit
    for src in (text, yaml.safe_dump(data), data):
        if levels <= MAX_DEPTH:
            load_document(src)
        else:
            with pytest.raises(ConfigError, match="Nesting too deep"):
                load_document(src)


# ---------------------------------------------------------------------------------------------
# Hostile YAML text: only ConfigError, never another exception

_FRAGMENTS = st.sampled_from(
    [
        "!!int abc", "!!bool maybe", "!!timestamp 2001-99-99", "!!float x", "!foo x",
        "!!binary '@@'", "!!set {a}", "!!omap [a: 1]", "!!python/name:os.system", "2001-13-01",
        "9" * 4400, "0x" + "f" * 4000, "1.0e+999", ".inf", "-.nan", "~", "null", "''", "on",
        "&a [1]", "*a", "*undefined", "[" * 70 + "]" * 70, "{a: {b: {c: [1]}}}", "<<: *a",
        "'quoted'", "\"\\u00e9\"", "1:30:00", "0o17", "-1",
    ]
)  # fmt: skip
_KEYS = st.sampled_from(
    ["quant_cfg", "algorithm", "null", "~", "1.5", "on", "2001-01-01", "-1", "'x'", "? [1]", "a"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_KEYS, _FRAGMENTS), min_size=1, max_size=5), st.booleans())
def test_hostile_yaml_gives_config_errors_only(pairs, nested):
    body = "".join(
        f"{key}: {value}\n" if not key.startswith("?") else f"{key}\n: {value}\n"
        for key, value in pairs
    )
    if nested:
        body = "quant_cfg:\n  - quantizer_name: '*'\n    cfg:\n" + textwrap.indent(body, "      ")
    try:
        qconfig.load_config(body)
    except ConfigError as exc:
        for d in exc.diagnostics:
            assert d.code.startswith("QC") and str(d)  # printable, with a code


# ---------------------------------------------------------------------------------------------
# 7. --skip-non-configs: decided from events, never by loading


def test_the_sniff_skips_an_alias_bomb_without_expanding_it(tmp_path):
    (tmp_path / "bomb.yaml").write_text(_alias_bomb().replace("quant_cfg", "data"), "utf-8")
    (tmp_path / "cfg_bomb.yaml").write_text(_alias_bomb(), encoding="utf-8")
    peak, out = _peak_mb(
        "from qconfig.loader.sniff import looks_like_config\n"
        "print(looks_like_config('bomb.yaml'), looks_like_config('cfg_bomb.yaml'))\n",
        tmp_path,
    )
    assert out == "False True" and peak < 200, peak


def test_skip_non_configs_on_a_bomb_and_a_config_bomb(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bomb.yaml").write_text(_alias_bomb().replace("quant_cfg", "data"), "utf-8")
    (tmp_path / "cfg_bomb.yaml").write_text(_alias_bomb(), encoding="utf-8")
    assert main(["lint", "--skip-non-configs", "bomb.yaml", "cfg_bomb.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("cfg_bomb.yaml:") and "QC001 Too many values" in out[0]
    assert out[-1] == "Found 1 error in 1 file."


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (OFF, True),
        ("# modelopt-schema: qconfig.QuantizerAttributeConfig\nnum_bits: 8\n", True),
        ("metadata: {recipe_type: ptq}\nquantize: {quant_cfg: []}\n", True),
        ("imports: {a: b}\n---\n- quantizer_name: '*'\n  enable: false\n", True),
        ('{"format": "qconfig.plan/v2", "algorithm": "max"}', False),
        ('{"format": "qconfig.manifest/v1", "modules": []}', False),
        ("on: push\njobs: {}\n", False),
        ('{"name": "x", "version": "1.0.0"}', False),
        ("- a\n- b\n", False),
        ("data: &x {quant_cfg: 1}\nother: *x\n", False),  # nested keys do not count
        ("quant_cfg: [\n", True),  # does not parse, mentions quant_cfg: lint says why
        ("foo: [\n", False),
        ("algorithm: !!int abc\n", True),  # tags are not constructed: no traceback
        ("", False),
        ("a: 1\n---\nquant_cfg: []\n", True),  # the last document decides
        ("quant_cfg: []\n---\na: 1\n", False),
    ],
)
def test_sniff_decisions(tmp_path, text, expected):
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    assert sniff.looks_like_config(path) is expected


def test_sniff_of_special_unreadable_and_huge_files(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.yaml")
    assert sniff.looks_like_config(tmp_path / "pipe.yaml") is False  # returns, never blocks
    assert sniff.looks_like_config("/dev/zero") is False
    assert sniff.looks_like_config(tmp_path) is False
    huge = tmp_path / "huge.yaml"
    huge.write_text("quant_cfg: []\ndata: [" + "1, " * (sniff.SNIFF_BYTES // 3) + "1]\n")
    assert sniff.looks_like_config(huge) is True  # judged by the part read
    (tmp_path / "data.yaml").write_text("data: [" + "1, " * (sniff.SNIFF_BYTES // 3) + "1]\n")
    assert sniff.looks_like_config(tmp_path / "data.yaml") is False
    locked = tmp_path / "locked.yaml"
    locked.write_text(OFF, encoding="utf-8")
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    assert sniff.looks_like_config(locked) is True  # lint then says why it cannot be read


def _loaded_decision(text: str) -> bool:
    """The decision the sniff replaced: load every document, look at the last one."""
    try:
        docs = list(yaml.load_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return "quant_cfg" in text
    body = docs[-1] if docs else None
    if isinstance(body, dict):
        if str(body.get("format", "")).startswith("qconfig."):
            return False
        return bool(sniff.CONFIG_KEYS & set(body))
    if isinstance(body, list):
        return any(isinstance(e, dict) and "quantizer_name" in e for e in body)
    return False


_SNIFF_KEYS = st.sampled_from(["quant_cfg", "algorithm", "quantize", "format", "quantizer_name",
                               "name", "jobs", "modules"])  # fmt: skip
_SNIFF_DATA = st.recursive(
    st.none() | st.sampled_from(["qconfig.plan/v2", "qconfig.manifest/v1", "x"]) | st.integers(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(_SNIFF_KEYS, children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_SNIFF_DATA, min_size=1, max_size=3), st.booleans())
def test_the_sniff_decides_as_loading_did(docs, as_json):
    """For any documents without aliases, the event scan reaches the decision the full load
    reached (the existing hook behaviour), for YAML and JSON text alike."""
    if as_json:
        assume(len(docs) == 1)
        text = json.dumps(docs[0])
    else:
        text = yaml.safe_dump_all(docs)
    path = Path(tempfile.mkdtemp()) / "f.yaml"
    try:
        path.write_text(text, encoding="utf-8")
        assert sniff.looks_like_config(path) is _loaded_decision(text), text
    finally:
        shutil.rmtree(path.parent)


# ---------------------------------------------------------------------------------------------
# 8. Empty configs


@pytest.mark.parametrize(
    ("text", "line"),
    [("", 1), ("# only a comment\n\n# another\n", 1), ("---\n", 2), ("null\n", 1), ("~\n", 1)],
)
def test_an_empty_config_file_is_an_error(tmp_path, text, line):
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    code, file, got_line, column, _, message = _error(path)
    assert (code, file, got_line, column) == ("QC006", str(path), line, 1)
    assert message.startswith("Empty config") and "quant_cfg: []" in message


def test_empty_mappings_and_bodies_are_errors(tmp_path):
    cases = {
        "c.json": ("{}", 1, 1, ""),
        "m.yaml": ("# a mapping with nothing in it\n{}\n", 2, 1, ""),
        "h.yaml": ("imports: {u: qconfig/units/int8}\n---\n", 3, 1, ""),
        "r.yaml": ("metadata: {recipe_type: ptq}\nquantize: {}\n", 2, 1, "quantize"),
    }
    for name, (text, line, column, path) in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        code, file, got_line, got_column, got_path, message = _error(tmp_path / name)
        assert (code, got_line, got_column, got_path) == ("QC006", line, column, path), name
        assert message.startswith("Empty config"), name
    with pytest.raises(ConfigError, match="Empty config"):
        load_recipe(tmp_path / "r.yaml")
    code, file, line, _, _, message = _error({})
    assert (code, file, line) == ("QC006", None, None) and "Empty config" in message
    assert _error({"$schema": "x.json"})[0] == "QC006"


def test_a_config_that_sets_anything_keeps_the_default_quant_cfg():
    """Only nothing at all is refused: ``algorithm: max`` alone keeps Model Optimizer's
    meaning (its default ``quant_cfg``), which lint reports separately."""
    config = qconfig.load_config("algorithm: max\n")
    assert config.algorithm == "max" and config.quant_cfg


def test_an_empty_snippet_is_an_error(tmp_path):
    path = tmp_path / "u.yaml"
    path.write_text("# modelopt-schema: qconfig.QuantizerAttributeConfig\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_snippet(path)
    (d,) = info.value.diagnostics
    assert (d.code, d.line) == ("QC006", 1)
    assert d.message.startswith("Empty document") and "QuantizerAttributeConfig" in d.message


def test_lint_reports_an_empty_config_file(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n", encoding="utf-8")
    assert main(["lint", "empty.yaml"]) == 1
    assert capsys.readouterr().out.startswith("empty.yaml:1:1: QC006 Empty config")


@pytest.mark.parametrize(
    ("source", "line", "column"),
    [
        ("$schema: 0.5\nquant_cfg: []\n", 1, 10),
        ('{"$schema": null, "quant_cfg": []}', 1, 13),
        ("$schema: [a]\n---\nquant_cfg: []\n", 1, 10),  # in a header document
    ],
)
def test_a_schema_declaration_must_be_a_string(source, line, column):
    """The published schema wants a string; lint must not be laxer than an editor."""
    with pytest.raises(ConfigError, match="'\\$schema' must be a string") as caught:
        qconfig.load_config(source)
    d = caught.value.diagnostics[0]
    assert (d.line, d.column) == (line, column)
    assert [x.code for x in qconfig.lint(source)] == [d.code]


def test_a_schema_declaration_from_python_must_be_a_string():
    with pytest.raises(ConfigError, match="must be a string"):
        qconfig.load_config({"quant_cfg": [], "$schema": 0.5})
    assert qconfig.load_config({"quant_cfg": [], "$schema": "s.json"}).quant_cfg == []

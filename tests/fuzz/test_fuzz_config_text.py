"""Fuzz: raw YAML/JSON text, files in any encoding, bombs and import bombs, through qconfig.

Any exception but ConfigError (CompileError), InputFileError and DocumentError fails, as does
a hang (the watchdog), a located error without a line, or lint disagreeing with the loader
(tests/fuzz/README.md).
"""

from __future__ import annotations

import pytest
from fuzz_corpus import MANIFESTS
from fuzz_pipeline import config_pipeline, read_as_path
from fuzz_support import budget, qconfig_errors, run_fuzz, watchdog
from fuzz_text import bomb_documents, documents
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

#: A generous limit per example of the whole pipeline; nothing should come near it.
EXAMPLE_SECONDS = 20.0

#: Failures the suite found (issue 11), kept as the first examples: ((suffix, text), manifest,
#: pick). An integer ``scale_bits`` in dynamic blocks compiled, then Plan.to_json raised
#: TypeError in QuantizerSpec.describe.
TEXT_SEEDS = (
    ((".yaml", "quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: [2, 1], block_sizes: "
      "{-1: 16, type: dynamic, scale_bits: 4}}\n"), "cnn", 0),
    ((".yaml", "quant_cfg: !!timestamp x\n"), "cnn", 0),
    ((".yaml", "quant_cfg: [{quantizer_name: '*', cfg: {num_bits: !!int abc}}]\n"), "cnn", 0),
    ((".yaml", "quant_cfg: {1: 8}\n"), "cnn", 0),
    ((".yaml", "quant_cfg: {~: 8, 1.5: {num_bits: 4}}\n"), "cnn", 0),
    ((".yaml", "\ud800"), "cnn", 0),
    ((".yaml", "\x00"), "cnn", 0),
    ((".yaml", "# modelopt-schema: qconfig.QuantizerCfgListConfig\n[]\n"), "cnn", 0),
    ((".yaml", "quant_cfg: [{quantizer_name: '*', cfg: {num_bits: " + "9" * 4301 + "}}]\n"),
     "cnn", 0),
    ((".json", "[" * 1000 + "]" * 1000), "cnn", 0),
    ((".yaml", "quant_cfg: &a [*a]\n"), "cnn", 0),
    ((".yaml", "quant_cfg:\n  - quantizer_name: '*weight_quantizer'\n    cfg: {num_bits: 8, "
      "block_sizes: {-1: 0}}\n"), "llama_decoder", 0),
)  # fmt: skip


def test_text_through_the_pipeline(fuzz_long, workspace):
    """Mutated real configs as YAML (block and flow) and JSON text, damaged as text."""

    def check(args):
        (_, text), manifest, pick = args
        with watchdog(EXAMPLE_SECONDS):
            return config_pipeline(text, manifest, pick, located=not read_as_path(text))

    outcomes = run_fuzz(
        "text",
        st.tuples(documents(), st.sampled_from(MANIFESTS), st.integers(0, 10**6)),
        check,
        long=fuzz_long,
        seeds=TEXT_SEEDS,
    )
    # the strategies must reach every stage, or the suite tests the parser only
    assert outcomes["compiled"] >= outcomes.total() // 10, outcomes
    assert outcomes["rejected-load"] >= outcomes.total() // 10, outcomes


ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1",
             "cp1252", "invalid-utf-8"]  # fmt: skip
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82",
                b"\xf4\x90\x80\x80", b"\x80"]  # fmt: skip


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(file name, bytes)``: a generated document in a drawn encoding, with a drawn name."""
    suffix, text = draw(documents())
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding == "invalid-utf-8":
        data = text.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from(INVALID_UTF8)) + data[at:]
    else:
        data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")
    name = "config" + draw(st.sampled_from([suffix, ".yaml", ".yml", ".json", "", ".txt"]))
    return name, data


def test_files_in_any_encoding(fuzz_long, workspace):
    """Config files in UTF-16/32, latin-1, with BOMs and invalid UTF-8: a file error or a
    located diagnostic naming the file, never a UnicodeDecodeError."""

    def check(args):
        (name, data), manifest, pick = args
        path = workspace / "sub" / name
        path.write_bytes(data)
        with watchdog(EXAMPLE_SECONDS):
            outcome = config_pipeline(path, manifest, pick, located=False)
            _check_file_named(path, manifest)
        return outcome

    outcomes = run_fuzz(
        "text-files",
        st.tuples(config_files(), st.sampled_from(MANIFESTS), st.integers(0, 10**6)),
        check,
        long=fuzz_long,
    )
    assert outcomes["compiled"] >= 1, outcomes


def _check_file_named(path, manifest_name) -> None:
    """Every load diagnostic of a file says which file (the user has many)."""
    import qconfig
    from fuzz_corpus import manifest

    try:
        found = qconfig.lint(path, manifest(manifest_name))
    except qconfig_errors():
        return
    for d in found:
        assert d.file, f"a diagnostic of {path} does not name a file: {d}"


def test_bombs_are_rejected_cheaply(fuzz_long, workspace):
    """Billion laughs, quadratic blow-up, merge chains, recursive aliases, bombs as keys: the
    loader and lint must answer within the budget (200 MB more address space; 3 s on shared
    CPUs, where an expanded bomb takes far longer) with an allowed error or a config."""
    import qconfig

    def check(text):
        with budget():
            try:
                qconfig.load_config(text)
                outcome = "loaded"
            except qconfig_errors():
                outcome = "rejected"
        with budget():
            qconfig.lint(text)
        return outcome

    seven = "".join(  # 7^7 = 823,543 values: built in full by the loader of issue 11
        f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "x"] * 7) + "]\n" for i in range(8)
    )
    quadratic = "a: &a " + "x" * 200_000 + "\nquant_cfg: [" + ", ".join(["*a"] * 20_000) + "]\n"
    seeds = (seven, quadratic)
    run_fuzz("bombs", bomb_documents(), check, long=fuzz_long, shrink=False, seeds=seeds)


@st.composite
def import_trees(draw: st.DrawFn) -> tuple[int, int, str]:
    """``(files, fan_out, shape)`` of an import graph: a chain where each file imports the
    previous one ``fan_out`` times (2^23 entries from 23 tiny files), a long chain (500+), or
    a cycle."""
    shape = draw(st.sampled_from(["fan", "chain", "cycle", "self"]))
    if shape == "chain":
        return draw(st.integers(100, 1000)), 1, shape
    return draw(st.integers(2, 60)), draw(st.integers(1, 4)), shape


def _write_imports(root, files: int, fan_out: int, shape: str):
    """Unit files f0..fN (lists of entries) and a config importing the last one."""
    leaf = '# modelopt-schema: qconfig.QuantizerCfgListConfig\n- {quantizer_name: "*", enable: false}\n'
    (root / "f0.yaml").write_text(leaf if shape != "self" else _unit("f0", fan_out))
    for i in range(1, files + 1):
        (root / f"f{i}.yaml").write_text(_unit(f"f{i - 1}", fan_out))
    if shape == "cycle":
        (root / "f0.yaml").write_text(_unit(f"f{files}", fan_out))
    top = root / "config.yaml"
    top.write_text(f"imports:\n  p: f{files}.yaml\nquant_cfg:\n  - $import: p\n")
    return top


def _unit(target: str, fan_out: int) -> str:
    body = "".join("- $import: p\n" for _ in range(fan_out))
    return f"# modelopt-schema: qconfig.QuantizerCfgListConfig\nimports:\n  p: {target}.yaml\n---\n{body}"


def test_import_bombs_are_rejected_cheaply(fuzz_long, workspace):
    """The expansion budget covers imports: fan-out chains, 500+ file chains and cycles are a
    ConfigError or a config, within the bomb budget, never a RecursionError."""
    import qconfig

    counter = iter(range(10**9))

    def check(args):
        files, fan_out, shape = args
        root = workspace / f"imports{next(counter)}"
        root.mkdir()
        top = _write_imports(root, files, fan_out, shape)
        with budget():
            try:
                qconfig.load_config(top)
                return "loaded"
            except qconfig_errors():
                return "rejected"

    seeds = ((23, 2, "fan"), (600, 1, "chain"))  # 4 GB and a RecursionError in issue 11
    outcomes = run_fuzz("imports", import_trees(), check, long=fuzz_long, shrink=False, seeds=seeds)
    assert outcomes["loaded"] >= 1, outcomes  # the import files themselves are valid

"""qconfig.loader: located errors for malformed files, and what a valid file loads to.

The table gives each malformed case as files written to a temporary directory; the expected
diagnostic names the file, 1-based line and column, the JSON path and a fragment of the
message. Positions were checked by hand against the texts below.
"""

import json
import textwrap
from pathlib import Path

import pytest
import qconfig
from qconfig import ConfigError, QuantizeConfig
from qconfig.loader import load_document, load_recipe, load_snippet

ENTRY_OFF = "  - quantizer_name: '*'\n    enable: false\n"

# name -> (files, file to load, [(code, file, line, column, path, message fragment), ...])
CASES = {
    "yaml_syntax_unclosed_flow": (
        {"c.yaml": "quant_cfg:\n  - quantizer_name: '*'\n    enable: [false\nalgorithm: max\n"},
        "c.yaml",
        [("QC001", "c.yaml", 4, 10, "", "YAML syntax error")],
    ),
    "yaml_syntax_bad_indent": (
        {"c.yaml": "quant_cfg:\n  - quantizer_name: '*'\n   enable: false\n"},
        "c.yaml",
        [("QC001", "c.yaml", 3, 4, "", "YAML syntax error")],
    ),
    "yaml_unsafe_tag": (
        {"c.yaml": "algorithm: !!python/name:os.system\n"},
        "c.yaml",
        [("QC001", "c.yaml", 1, 12, "", "could not determine a constructor")],
    ),
    "json_syntax_trailing_comma": (
        {"c.json": '{\n  "quant_cfg": [],\n  "algorithm": "max",\n}\n'},
        "c.json",
        [("QC001", "c.json", 4, 1, "", "JSON syntax error")],
    ),
    "yaml_duplicate_top_level_key": (
        {"c.yaml": "algorithm: max\nquant_cfg: []\nalgorithm: null\n"},
        "c.yaml",
        [("QC002", "c.yaml", 3, 1, "algorithm", "first defined at line 1, column 1")],
    ),
    "yaml_duplicate_key_inside_entry": (
        {
            "c.yaml": "quant_cfg:\n"
            + ENTRY_OFF
            + "  - quantizer_name: '*weight_quantizer'\n"
            + "    cfg: {num_bits: 8, axis: 0}\n"
            + "    cfg: {num_bits: 4, axis: 0}\n"
        },
        "c.yaml",
        [("QC002", "c.yaml", 6, 5, "quant_cfg[1].cfg", "first defined at line 5, column 5")],
    ),
    "yaml_duplicate_block_key_after_int_restoration": (
        {
            "c.yaml": "quant_cfg:\n"
            "  - quantizer_name: '*weight_quantizer'\n"
            "    cfg:\n"
            "      num_bits: 4\n"
            "      block_sizes:\n"
            "        -1: 128\n"
            "        '-1': 64\n"
        },
        "c.yaml",
        [("QC002", "c.yaml", 7, 9, "quant_cfg[0].cfg.block_sizes[-1]", "line 6, column 9")],
    ),
    "json_duplicate_key": (
        {
            "c.json": "{\n"
            '  "quant_cfg": [\n'
            '    {"quantizer_name": "*", "enable": false, "enable": true}\n'
            "  ]\n"
            "}\n"
        },
        "c.json",
        [("QC002", "c.json", 3, 46, "quant_cfg[0].enable", "first defined at line 3, column 29")],
    ),
    "wrong_type_deep_inside_entry": (
        {
            "c.yaml": "quant_cfg:\n"
            + ENTRY_OFF
            + "  - quantizer_name: '*weight_quantizer'\n"
            + "    cfg:\n"
            + "      num_bits: 8\n"
            + "      axis: zero\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 7, 13, "quant_cfg[1].cfg.axis", "valid integer")],
    ),
    "wrong_type_in_json_block_sizes": (
        {
            "c.json": "{\n"
            '  "quant_cfg": [\n'
            '    {"quantizer_name": "*", "enable": false},\n'
            '    {"quantizer_name": "*weight_quantizer",\n'
            '     "cfg": {"num_bits": 4, "block_sizes": {"-1": [1, 2], "type": "static"}}}\n'
            "  ]\n"
            "}\n"
        },
        "c.json",
        [("QC003", "c.json", 5, 29, "quant_cfg[1].cfg.block_sizes", "block_sizes[-1]")],
    ),
    "unknown_field_in_cfg": (
        {
            "c.yaml": "quant_cfg:\n"
            "  - quantizer_name: '*input_quantizer'\n"
            "    cfg:\n"
            "      num_bits: 8\n"
            "      axes: 0\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 5, 7, "quant_cfg[0].cfg.axes", "Unknown field 'axes'")],
    ),
    "unknown_top_level_field": (
        {"c.yaml": "quant_cfg: []\nalgorithms: max\n"},
        "c.yaml",
        [("QC003", "c.yaml", 2, 1, "algorithms", "Unknown field 'algorithms'")],
    ),
    "entry_without_cfg_or_enable": (
        {"c.yaml": "quant_cfg:\n" + ENTRY_OFF + "  - quantizer_name: '*lm_head*'\n"},
        "c.yaml",
        [("QC003", "c.yaml", 4, 5, "quant_cfg[1]", "must specify 'cfg', 'enable', or both")],
    ),
    "bad_exmy_string": (
        {
            "c.yaml": "quant_cfg:\n"
            "  - quantizer_name: '*weight_quantizer'\n"
            "    cfg:\n"
            "      num_bits: e3m3\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 3, 5, "quant_cfg[0].cfg", "Supported FPx quantization formats")],
    ),
    "exmy_format_needs_dynamic_blocks": (
        {
            "c.yaml": "quant_cfg:\n"
            "  - quantizer_name: '*weight_quantizer'\n"
            "    cfg: {num_bits: e5m2, axis: null}\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 3, 5, "quant_cfg[0].cfg", "Only blockwise dynamic quantization")],
    ),
    "bad_algorithm": (
        {"c.yaml": "quant_cfg: []\nalgorithm:\n  method: max\n  step_size: 0.5\n"},
        "c.yaml",
        [("QC003", "c.yaml", 2, 1, "algorithm", "step_size")],
    ),
    "legacy_flat_dict_nested_error": (
        {
            "c.yaml": "quant_cfg:\n"
            "  default: {num_bits: 8, axis: null}\n"
            "  nn.Linear:\n"
            "    '*weight_quantizer': {num_bits: 4, axis: 0, learn_amax: true}\n"
        },
        "c.yaml",
        [
            (
                "QC003",
                "c.yaml",
                4,
                61,
                "quant_cfg['nn.Linear']['*weight_quantizer'].learn_amax",
                "learn_amax is deprecated",
            )
        ],
    ),
    "legacy_single_key_entry_bad_enable": (
        {"c.yaml": "quant_cfg:\n" + ENTRY_OFF + "  - '*lm_head*': {enable: maybe}\n"},
        "c.yaml",
        [("QC003", "c.yaml", 4, 27, "quant_cfg[1]['*lm_head*'].enable", "valid boolean")],
    ),
    "legacy_scoped_value_not_a_mapping": (
        {"c.yaml": "quant_cfg:\n  nn.Linear: 8\n"},
        "c.yaml",
        [("QC003", "c.yaml", 2, 14, "quant_cfg['nn.Linear']", "value must be a mapping")],
    ),
    "legacy_multi_key_element": (
        {
            "c.yaml": "quant_cfg:\n"
            + ENTRY_OFF
            + "  - '*': {enable: false}\n"
            + "    '*weight_quantizer': {num_bits: 8}\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 4, 5, "quant_cfg[1]", "Invalid quant_cfg entry")],
    ),
    "unknown_import_alias": (
        {
            "c.yaml": "imports:\n"
            "  fp8: qconfig/units/fp8\n"
            "quant_cfg:\n"
            "  - quantizer_name: '*input_quantizer'\n"
            "    cfg:\n"
            "      $import: fp16\n"
        },
        "c.yaml",
        [
            (
                "QC004",
                "c.yaml",
                6,
                16,
                "quant_cfg[0].cfg['$import']",
                "Unknown $import reference 'fp16'",
            )
        ],
    ),
    "import_without_imports_section": (
        {"c.yaml": "quant_cfg:\n  - $import: base_disable_all\n"},
        "c.yaml",
        [("QC004", "c.yaml", 2, 14, "quant_cfg[0]['$import']", "none are declared")],
    ),
    "bad_import_value_type": (
        {
            "c.yaml": "imports:\n"
            "  fp8: qconfig/units/fp8\n"
            "quant_cfg:\n"
            "  - quantizer_name: '*input_quantizer'\n"
            "    cfg: {$import: [fp8, 7]}\n"
        },
        "c.yaml",
        [("QC004", "c.yaml", 5, 20, "quant_cfg[0].cfg['$import']", "Unknown $import reference 7")],
    ),
    "import_file_missing": (
        {"c.yaml": "imports:\n  fp8: numerics/fp8\nquant_cfg: []\n"},
        "c.yaml",
        [("QC004", "c.yaml", 2, 8, "imports.fp8", "Cannot find import 'fp8'")],
    ),
    "import_path_not_a_string": (
        {"c.yaml": "imports:\n  fp8: [a, b]\nquant_cfg: []\n"},
        "c.yaml",
        [("QC004", "c.yaml", 2, 8, "imports.fp8", "non-empty path string")],
    ),
    "import_snippet_without_schema": (
        {
            "c.yaml": "imports:\n  fp8: fp8\nquant_cfg: []\n",
            "fp8.yaml": "num_bits: e4m3\n",
        },
        "c.yaml",
        [("QC004", "c.yaml", 2, 8, "imports.fp8", "modelopt-schema comment")],
    ),
    "import_cycle": (
        {
            "a.yaml": "imports:\n  b: b\nquant_cfg:\n  - $import: b\n",
            "b.yaml": "# modelopt-schema: qconfig.QuantizerCfgListConfig\n"
            "imports:\n  back: a\n---\n- $import: back\n",
        },
        "a.yaml",
        [("QC004", "b.yaml", 3, 9, "imports.back", "Circular import: a.yaml -> b.yaml -> a.yaml")],
    ),
    "import_mapping_resolves_to_list": (
        {
            "c.yaml": "imports:\n"
            "  dd: qconfig/units/default_disabled_quantizers\n"
            "quant_cfg:\n"
            "  - quantizer_name: '*'\n"
            "    cfg:\n"
            "      $import: dd\n"
        },
        "c.yaml",
        [("QC004", "c.yaml", 6, 16, "quant_cfg[0].cfg['$import']", "must resolve to a mapping")],
    ),
    "import_wrong_schema_into_list": (
        {"c.yaml": "imports:\n  fp8: qconfig/units/fp8\nquant_cfg:\n  - $import: fp8\n"},
        "c.yaml",
        [("QC004", "c.yaml", 4, 14, "quant_cfg[0]['$import']", "QuantizerCfgEntry elements")],
    ),
    "error_inside_imported_snippet": (
        {
            "c.yaml": "imports:\n  w: units/w\nquant_cfg:\n  - $import: w\n",
            "units/w.yaml": "# modelopt-schema: modelopt.torch.quantization.config."
            "QuantizerCfgListConfig\n"
            "- quantizer_name: '*weight_quantizer'\n"
            "  cfg:\n"
            "    num_bits: 4\n"
            "    block_sizes: {-1: 128, type: static}\n"
            "    axis: 0\n",
        },
        "c.yaml",
        [("QC003", "units/w.yaml", 5, 5, "[0].cfg.block_sizes", "axis must be None")],
    ),
    "error_from_inline_override_of_import": (
        {
            "c.yaml": "imports:\n"
            "  nvfp4: qconfig/units/nvfp4\n"
            "quant_cfg:\n"
            "  - quantizer_name: '*weight_quantizer'\n"
            "    cfg:\n"
            "      $import: nvfp4\n"
            "      effective_bits: 17\n"
        },
        "c.yaml",
        [("QC003", "c.yaml", 7, 23, "quant_cfg[0].cfg.effective_bits", "(0, 16]")],
    ),
    "three_documents": (
        {"c.yaml": "imports: {}\n---\nquant_cfg: []\n---\nalgorithm: max\n"},
        "c.yaml",
        [("QC006", "c.yaml", 5, 1, "", "Expected 1 or 2 YAML documents")],
    ),
    "root_is_a_scalar": (
        {"c.yaml": "# a comment\nint8\n"},
        "c.yaml",
        [("QC006", "c.yaml", 2, 1, "", "must be a mapping or a list")],
    ),
    "unknown_schema_comment": (
        {"c.yaml": "# header\n# modelopt-schema: qconfig.NoSuchConfig\nquant_cfg: []\n"},
        "c.yaml",
        [("QC006", "c.yaml", 2, 1, "", "Unknown modelopt-schema")],
    ),
    "foreign_schema_comment": (
        {"c.yaml": "# modelopt-schema: os.system\nquant_cfg: []\n"},
        "c.yaml",
        [("QC006", "c.yaml", 1, 1, "", "must start with 'modelopt.' or 'qconfig.'")],
    ),
    "recipe_unsupported_type": (
        {"r.yaml": "metadata:\n  recipe_type: auto_quantize\nquantize:\n  quant_cfg: []\n"},
        "r.yaml",
        [("QC003", "r.yaml", 2, 16, "metadata.recipe_type", "only 'ptq'")],
    ),
    "recipe_error_inside_quantize": (
        {
            "r.yaml": "metadata: {recipe_type: ptq}\n"
            "quantize:\n"
            "  algorithm: max\n"
            "  quant_cfg:\n"
            "    - quantizer_name: '*'\n"
            "      enable: 3\n"
        },
        "r.yaml",
        [("QC003", "r.yaml", 6, 15, "quantize.quant_cfg[0].enable", "valid boolean")],
    ),
    "recipe_without_quantize": (
        {"r.yaml": "metadata: {recipe_type: ptq, description: nothing}\n"},
        "r.yaml",
        [("QC006", "r.yaml", 1, 1, "", "must contain a 'quantize' section")],
    ),
    "missing_file": ({}, "nope.yaml", [("QC005", "nope.yaml", None, None, "", "No such file")]),
}


@pytest.mark.filterwarnings("ignore:Passing quant_cfg in the legacy dict format")
@pytest.mark.parametrize("name", list(CASES))
def test_malformed_file_reports_location(name, tmp_path):
    files, target, expected = CASES[name]
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        qconfig.load_config(tmp_path / target)
    got = [
        (d.code, d.file, d.line, d.column, d.path, d.message, d.severity)
        for d in info.value.diagnostics
    ]
    assert len(got) == len(expected), got
    for (code, file, line, column, path, message, severity), want in zip(
        got, expected, strict=True
    ):
        w_code, w_file, w_line, w_column, w_path, fragment = want
        assert (code, file, line, column, path) == (
            w_code,
            str(tmp_path / w_file),
            w_line,
            w_column,
            w_path,
        ), got
        assert fragment in message, message
        assert severity == "error"
    # the rendered error names the place the way linters do: file:line:col: CODE message
    first = info.value.diagnostics[0]
    where = ":".join(str(p) for p in (first.file, first.line, first.column) if p is not None)
    assert str(info.value).startswith(f"{where}: {first.code} ")


def test_several_errors_are_reported_together(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "quant_cfg:\n"
        "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: zero}\n"
        "  - quantizer_name: '*input_quantizer'\n"
        "    cfg: {num_bits: 8, bogus: 1}\n"
        "effective_bits: 20\n"
    )
    with pytest.raises(ConfigError) as info:
        qconfig.load_config(path)
    places = [(d.line, d.column, d.path) for d in info.value.diagnostics]
    assert places == [
        (3, 30, "quant_cfg[0].cfg.axis"),
        (5, 24, "quant_cfg[1].cfg.bogus"),
        (6, 17, "effective_bits"),
    ]


def test_union_alternatives_become_one_message(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: 8, axis: zero}\n")
    with pytest.raises(ConfigError) as info:
        qconfig.load_config(path)
    (diagnostic,) = info.value.diagnostics
    assert "valid integer" in diagnostic.message and "valid tuple" in diagnostic.message
    assert diagnostic.message.endswith("(got 'zero')")


def test_text_and_mapping_errors_carry_paths():
    with pytest.raises(ConfigError) as info:
        qconfig.load_config("quant_cfg:\n  - quantizer_name: '*'\n    enable: sometimes\n")
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.column, d.path) == (None, 3, 13, "quant_cfg[0].enable")
    with pytest.raises(ConfigError) as info:
        qconfig.load_config({"quant_cfg": [{"quantizer_name": "*", "enable": "sometimes"}]})
    (d,) = info.value.diagnostics
    assert (d.file, d.line, d.column, d.path) == (None, None, None, "quant_cfg[0].enable")


# ------------------------------------------------------------------------------------------
# What valid files load to
# ------------------------------------------------------------------------------------------
def _entries(config: QuantizeConfig) -> list[dict]:
    return [e.model_dump(exclude_unset=True) for e in config.quant_cfg]


def test_exmy_strings_become_tuples_under_num_bits_and_scale_bits_only():
    config = qconfig.load_config(
        "quant_cfg:\n"
        "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg:\n"
        "      num_bits: E2M1\n"
        "      block_sizes: {-1: 16, type: dynamic, scale_bits: e4m3}\n"
        "  - quantizer_name: '*input_quantizer'\n"
        "    cfg: {num_bits: e4m3, axis: null}\n"
        "  - quantizer_name: '*custom*'\n"
        "    cfg: {num_bits: fp8_custom, backend: mine, backend_extra_args: {tag: e4m3}}\n"
    )
    weight, act, custom = config.quant_cfg
    assert weight.cfg.num_bits == (2, 1)
    assert weight.cfg.block_sizes == {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}
    assert act.cfg.num_bits == (4, 3)
    assert custom.cfg.num_bits == "fp8_custom"  # not ExMy: left as the string
    assert custom.cfg.backend_extra_args == {"tag": "e4m3"}  # other keys are not converted


def test_exmy_conversion_in_json_and_mappings():
    text = json.dumps(
        {"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": "e4m3", "axis": None}}]}
    )
    assert qconfig.load_config(text).quant_cfg[0].cfg.num_bits == (4, 3)
    mapping = {"quant_cfg": [{"quantizer_name": "*", "cfg": {"num_bits": "e4m3"}}]}
    assert qconfig.load_config(mapping).quant_cfg[0].cfg.num_bits == (4, 3)
    assert mapping["quant_cfg"][0]["cfg"]["num_bits"] == "e4m3"  # the caller's data is untouched


def test_string_int_keys_restored_in_block_sizes_and_bias(tmp_path):
    path = tmp_path / "kv.json"
    path.write_text(
        json.dumps(
            {
                "quant_cfg": [
                    {
                        "quantizer_name": "*[kv]_bmm_quantizer",
                        "cfg": {
                            "num_bits": [2, 1],
                            "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]},
                            "bias": {"-2": None, "-4": None, "type": "static"},
                        },
                    },
                    {"quantizer_name": "x", "cfg": {"backend_extra_args": {"-1": 1}}},
                ]
            }
        )
    )
    first, second = qconfig.load_config(path).quant_cfg
    assert first.cfg.block_sizes == {-1: 16, "type": "dynamic", "scale_bits": (4, 3)}
    assert first.cfg.bias == {-2: None, -4: None, "type": "static"}
    assert first.cfg.num_bits == (2, 1)
    assert second.cfg.backend_extra_args == {"-1": 1}  # only axis dicts are restored


def test_quoted_int_keys_in_yaml_are_restored():
    config = qconfig.load_config(
        "quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: 4, block_sizes: {'-1': 128}}\n"
    )
    assert config.quant_cfg[0].cfg.block_sizes == {-1: 128}


def test_schema_key_is_accepted_and_dropped(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps({"$schema": "../schemas/config.json", "quant_cfg": [], "algorithm": None})
    )
    config = qconfig.load_config(path)
    assert config.model_dump(exclude_unset=True) == {"quant_cfg": [], "algorithm": None}
    yaml_config = qconfig.load_config("$schema: https://example.org/s.json\nquant_cfg: []\n")
    assert yaml_config.quant_cfg == []


def test_text_forms():
    assert qconfig.load_config("{quant_cfg: [], algorithm: null}").algorithm is None  # YAML flow
    assert qconfig.load_config('{"quant_cfg": [], "effective_bits": 1e1}').effective_bits == 10
    with pytest.raises(ConfigError, match="Empty config"):
        qconfig.load_config("")  # nothing written: refused (docs/differences.md)
    # An empty header document does not discard the body (Model Optimizer returns {} here).
    assert qconfig.load_config("---\n---\nalgorithm: null\n").algorithm is None
    config = QuantizeConfig(quant_cfg=[])
    assert qconfig.load_config(config) is config


def test_recipe_form(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(
        "# A PTQ recipe in Model Optimizer's format.\n"
        "imports:\n"
        "  base_disable_all: configs/ptq/units/base_disable_all\n"
        "  w8a8_fp8_fp8: configs/ptq/units/w8a8_fp8_fp8\n"
        "  kv_fp8: configs/ptq/units/kv_fp8\n"
        "  default_disabled_quantizers: configs/ptq/units/default_disabled_quantizers\n"
        "metadata:\n"
        "  recipe_type: ptq\n"
        "  description: FP8 model with FP8 KV cache.\n"
        "quantize:\n"
        "  algorithm: max\n"
        "  quant_cfg:\n"
        "    - $import: base_disable_all\n"
        "    - $import: w8a8_fp8_fp8\n"
        "    - $import: kv_fp8\n"
        "    - $import: default_disabled_quantizers\n"
    )
    recipe = load_recipe(path)
    assert recipe.metadata == {"recipe_type": "ptq", "description": "FP8 model with FP8 KV cache."}
    assert recipe.recipe_type == "ptq"
    expected = (
        qconfig.presets.get("FP8_DEFAULT_CFG")["quant_cfg"][:3]
        + qconfig.presets.get("FP8_KV_CFG")["quant_cfg"]
        + qconfig.presets.get("_default_disabled_quantizer_cfg")
    )
    assert _entries(recipe.quantize) == expected
    assert qconfig.load_config(path) == recipe.quantize
    no_description = load_recipe("metadata: {recipe_type: ptq}\nquantize: {quant_cfg: []}\n")
    assert no_description.description == "Model optimization recipe."


def test_load_recipe_rejects_plain_configs():
    with pytest.raises(ConfigError, match="Not a recipe"):
        load_recipe("quant_cfg: []\n")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_imports_resolve_relative_to_the_importing_file_not_the_cwd(tmp_path, monkeypatch):
    _write(
        tmp_path,
        {
            "configs/main.yaml": """\
                imports:
                  w: units/weights
                quant_cfg:
                  - $import: w
                """,
            "configs/units/weights.yaml": """\
                # modelopt-schema: qconfig.QuantizerCfgListConfig
                imports:
                  int4: ../numerics/int4
                ---
                - quantizer_name: '*weight_quantizer'
                  cfg:
                    $import: int4
                """,
            "configs/numerics/int4.yaml": """\
                # modelopt-schema: qconfig.QuantizerAttributeConfig
                num_bits: 4
                block_sizes: {-1: 128, type: static}
                """,
            # Shadows in the working directory: Model Optimizer would pick these up (docs/model-optimizer-rules.md, 'YAML files and imports').
            "cwd/units/weights.yaml": """\
                # modelopt-schema: qconfig.QuantizerCfgListConfig
                - quantizer_name: '*shadowed*'
                  enable: false
                """,
            "cwd/numerics/int4.yaml": """\
                # modelopt-schema: qconfig.QuantizerAttributeConfig
                num_bits: 8
                """,
            "cwd/configs/ptq/units/base_disable_all.yaml": """\
                # modelopt-schema: qconfig.QuantizerCfgEntry
                quantizer_name: '*shadowed*'
                enable: false
                """,
        },
    )
    monkeypatch.chdir(tmp_path / "cwd")
    config = qconfig.load_config(tmp_path / "configs" / "main.yaml")
    assert _entries(config) == [
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
        }
    ]
    # Model Optimizer's built-in names fall back to our packaged units, not the CWD copy.
    text = "imports: {b: configs/ptq/units/base_disable_all}\nquant_cfg: [{$import: b}]\n"
    assert _entries(qconfig.load_config(text, base_dir=tmp_path)) == [
        {"quantizer_name": "*", "enable": False}
    ]


def test_text_imports_resolve_against_base_dir(tmp_path):
    _write(
        tmp_path,
        {
            "disable.yaml": """\
                # modelopt-schema: qconfig.QuantizerCfgEntry
                quantizer_name: '*'
                enable: false
                """
        },
    )
    text = "imports: {no_quant: disable}\nquant_cfg: [{$import: no_quant}]\n"
    config = qconfig.load_config(text, base_dir=tmp_path)
    assert _entries(config) == [{"quantizer_name": "*", "enable": False}]


def test_splice_append_and_inline_override(tmp_path):
    _write(
        tmp_path,
        {
            "c.yaml": """\
                imports:
                  disable_all: qconfig/units/base_disable_all
                  wa: qconfig/units/w8a8_fp8_fp8
                  int4: qconfig/units/int4_per_block
                  fp8: qconfig/units/fp8
                algorithm: awq_lite
                quant_cfg:
                  - $import: disable_all
                  - $import: wa
                  - quantizer_name: '*weight_quantizer'
                    cfg:
                      - $import: int4
                      - $import: fp8
                  - quantizer_name: '*input_quantizer'
                    cfg:
                      $import: fp8
                      axis: -1
                """
        },
    )
    assert _entries(qconfig.load_config(tmp_path / "c.yaml")) == [
        {"quantizer_name": "*", "enable": False},  # QuantizerCfgEntry snippet: appended
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}},
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3), "axis": None}},
        {
            "quantizer_name": "*weight_quantizer",
            "cfg": [  # attribute snippets in a cfg list: each appended
                {"num_bits": 4, "block_sizes": {-1: 128, "type": "static"}},
                {"num_bits": (4, 3), "axis": None},
            ],
        },
        {"quantizer_name": "*input_quantizer", "cfg": {"num_bits": (4, 3), "axis": -1}},
    ]


def test_import_list_merges_left_to_right(tmp_path):
    _write(
        tmp_path,
        {
            "a.yaml": "# modelopt-schema: qconfig.QuantizerAttributeConfig\nnum_bits: 4\naxis: 0\n",
            "b.yaml": "# modelopt-schema: qconfig.QuantizerAttributeConfig\naxis: 1\n",
        },
    )
    text = (
        "imports: {a: a, b: b}\nquant_cfg:\n  - quantizer_name: '*'\n    cfg: {$import: [a, b]}\n"
    )
    config = qconfig.load_config(text, base_dir=tmp_path)
    assert config.quant_cfg[0].cfg.model_dump(exclude_unset=True) == {"num_bits": 4, "axis": 1}


def test_same_unit_imported_twice_is_independent(tmp_path):
    text = (
        "imports: {fp8: qconfig/units/fp8}\n"
        "quant_cfg:\n"
        "  - {quantizer_name: a, cfg: {$import: fp8}}\n"
        "  - {quantizer_name: b, cfg: {$import: fp8, axis: 0}}\n"
        "  - {quantizer_name: c, cfg: {$import: fp8}}\n"
    )
    axes = [e.cfg.axis for e in qconfig.load_config(text, base_dir=tmp_path).quant_cfg]
    assert axes == [None, 0, None]


def test_two_document_header_with_mapping_body():
    config = qconfig.load_config(
        "imports:\n  disable_all: qconfig/units/base_disable_all\n---\nalgorithm: null\n"
        "quant_cfg:\n  - $import: disable_all\n"
    )
    assert config.algorithm is None
    assert _entries(config) == [{"quantizer_name": "*", "enable": False}]


def test_load_snippet_and_document(tmp_path):
    units = qconfig.loader.PRESETS_DIR / "units"
    entries = load_snippet(units / "default_disabled_quantizers.yaml")
    assert len(entries) == 24
    nvfp4 = load_snippet(units / "nvfp4.yaml")
    assert nvfp4.num_bits == (2, 1) and nvfp4.block_sizes[-1] == 16
    doc = load_document(qconfig.presets.path("INT8_DEFAULT_CFG"))
    assert doc.schema == "QuantizeConfig"
    # entry 1 came from the preset file itself, entry 3 from the imported unit
    assert doc.locate(("quant_cfg", 1, "cfg")) == (
        str(qconfig.presets.path("INT8_DEFAULT_CFG")),
        13,
        5,
    )
    assert doc.locate(("quant_cfg", 3)) == (str(units / "default_disabled_quantizers.yaml"), 6, 3)
    with pytest.raises(ConfigError, match="load_snippet"):
        qconfig.load_config(units / "nvfp4.yaml")


def test_legacy_forms_load_with_warning(tmp_path):
    path = tmp_path / "legacy.yaml"
    path.write_text(
        "quant_cfg:\n"
        "  '*weight_quantizer': {num_bits: 8, axis: 0}\n"
        "  nn.Conv2d:\n"
        "    '*input_quantizer': {enable: false}\n"
        "  default: {enable: false}\n"
    )
    with pytest.warns(DeprecationWarning):
        config = qconfig.load_config(path)
    assert _entries(config) == [
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {
            "quantizer_name": "*input_quantizer",
            "parent_class": "nn.Conv2d",
            "cfg": None,
            "enable": False,
        },
        {"quantizer_name": "*", "cfg": None, "enable": False},
    ]


def test_yaml_anchors_and_merge_keys():
    config = qconfig.load_config(
        "quant_cfg:\n"
        "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: &fp8 {num_bits: e4m3, axis: null}\n"
        "  - quantizer_name: '*input_quantizer'\n"
        "    cfg:\n"
        "      <<: *fp8\n"
        "      axis: -1\n"
    )
    assert [e.cfg.model_dump(exclude_unset=True) for e in config.quant_cfg] == [
        {"num_bits": (4, 3), "axis": None},
        {"num_bits": (4, 3), "axis": -1},
    ]


def test_recursive_alias_is_rejected():
    with pytest.raises(ConfigError) as info:
        qconfig.load_config("quant_cfg: &a [*a]\n")
    assert info.value.diagnostics[0].code == "QC001"

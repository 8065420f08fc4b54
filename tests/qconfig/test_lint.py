"""Each lint rule fires on a config written to trigger it (at the right file:line:column) and
stays quiet on the presets it should accept. Manifests are the checked-in examples."""

from pathlib import Path

import pytest
from qconfig import lint, presets
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.lint import RULES
from qconfig.manifest import Manifest, ModuleSite, QuantizerSite

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "manifests"
LLAMA = Manifest.load(EXAMPLES / "llama_decoder.json")
CNN = Manifest.load(EXAMPLES / "cnn.json")


def run(tmp_path, text: str, manifest=LLAMA, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return lint(str(path), manifest)


def codes(found) -> list[str]:
    return [d.code for d in found]


def only(found, code):
    hits = [d for d in found if d.code == code]
    assert hits, f"{code} not reported; got {[str(d) for d in found]}"
    return hits


HEADER = 'quant_cfg:\n  - quantizer_name: "*"\n    enable: false\n'


def test_clean_config_has_no_findings(tmp_path):
    found = run(
        tmp_path,
        HEADER
        + "  - quantizer_name: '*weight_quantizer'\n    cfg: {num_bits: 8, axis: 0}\n"
        + "  - quantizer_name: '*input_quantizer'\n    cfg: {num_bits: 8, axis: null}\n"
        + "  - quantizer_name: '*lm_head*'\n    enable: false\n"
        + "algorithm: max\n",
    )
    assert found == []


def test_validation_error_is_a_located_diagnostic(tmp_path):
    found = run(tmp_path, HEADER + "  - quantizer_name: '*w*'\n    cfg: {num_bit: 8}\n")
    (d,) = found
    assert (d.code, d.severity, d.line, d.column) == ("QC003", "error", 5, 11)
    assert d.path.startswith("quant_cfg[1].cfg")


def test_qc201_legacy_and_qc202_default_not_first(tmp_path):
    found = run(
        tmp_path,
        "quant_cfg:\n  '*weight_quantizer': {num_bits: 4, axis: 0}\n"
        "  '*input_quantizer': {num_bits: 8, axis: null}\n  default: {enable: false}\n",
        manifest=None,
    )
    legacy = only(found, "QC201")[0]
    assert (legacy.line, legacy.column, legacy.fixable) == (1, 1, True)
    default = only(found, "QC202")[0]
    assert default.line == 4 and "overrides the 2 entries" in default.message


def test_qc203_inner_enable(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 4, axis: 0, enable: false}\n",
        manifest=None,
    )
    d = only(found, "QC203")[0]
    assert (d.line, d.path) == (5, "quant_cfg[1].cfg.enable") and "ends enabled" in d.message


def test_qc204_no_deny_all(tmp_path):
    found = run(
        tmp_path,
        "quant_cfg:\n  - quantizer_name: '*weight_quantizer'\n    cfg: {num_bits: 8, axis: 0}\n",
        manifest=None,
    )
    assert codes(found) == ["QC204"]


def test_qc205_unmatched_and_qc214_case(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: 0}\n  - quantizer_name: '*LM_HEAD*'\n"
        "    enable: false\n  - quantizer_name: 'model.lm_head*'\n"
        "    cfg: {num_bits: 4, axis: 0}\n",
    )
    unmatched = only(found, "QC205")
    assert sorted((d.line, d.severity) for d in unmatched) == [(6, "info"), (8, "warning")]
    case = only(found, "QC214")
    assert len(case) == 1 and case[0].line == 6 and "lm_head" in case[0].message


def test_qc206_shadowed(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*mlp*weight_quantizer'\n"
        "    cfg: {num_bits: 4, axis: 0}\n  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: 0}\n",
    )
    d = only(found, "QC206")[0]
    assert d.line == 4 and "override" in d.message


def test_qc207_enable_only_true_keeps_module_default(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 4, axis: 0}\n  - quantizer_name: '*input_quantizer'\n"
        "    enable: true\n",
    )
    d = only(found, "QC207")[0]
    assert d.line == 6 and "INT8 per-tensor" in d.message


def test_qc208_no_weight_quantizer_respects_parent_class(tmp_path):
    # the e9 case: 0.47.0's check is fooled by the later same-pattern entry; ours is not
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n    parent_class: nn.Conv1d\n"
        "    cfg: {num_bits: 8}\n  - quantizer_name: '*weight_quantizer'\n"
        "    parent_class: nn.Embedding\n    enable: false\n",
    )
    d = only(found, "QC208")[0]
    assert "nn.Conv1d" in d.message
    assert "QC102" not in codes(found)


def test_qc102_weight_check_is_an_error(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*experts*weight_quantizer'\n"
        "    cfg: {num_bits: 4, axis: 0}\n",
    )
    d = only(found, "QC102")[0]
    assert d.severity == "error"


def test_qc102_weight_check_is_an_argument_not_the_environment(tmp_path, monkeypatch):
    """``weight_check=False`` skips the check; the library never reads the environment (only
    the CLI reads MODELOPT_SKIP_WEIGHT_QUANT_CHECK)."""
    from qconfig import compile_plan, load_config
    from qconfig.cli import main
    from qconfig.compile import CompileError

    text = HEADER + "  - quantizer_name: '*experts*weight_quantizer'\n    cfg: {num_bits: 4}\n"
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    config = load_config(path)
    assert "QC102" not in codes(lint(str(path), LLAMA, weight_check=False))
    compile_plan(config, LLAMA, weight_check=False)  # no error
    monkeypatch.setenv("MODELOPT_SKIP_WEIGHT_QUANT_CHECK", "1")
    with pytest.raises(CompileError):
        compile_plan(config, LLAMA)
    assert "QC102" in codes(lint(str(path), LLAMA))
    manifest = str(EXAMPLES / "llama_decoder.json")
    assert main(["lint", str(path), "--manifest", manifest]) == 0
    monkeypatch.delenv("MODELOPT_SKIP_WEIGHT_QUANT_CHECK")
    assert main(["lint", str(path), "--manifest", manifest]) == 1


def test_qc101_unknown_parent_class(tmp_path):
    found = run(
        tmp_path, HEADER + "  - quantizer_name: '*'\n    parent_class: nn.ReLU\n    enable: false\n"
    )
    d = only(found, "QC101")[0]
    assert (d.line, d.path) == (5, "quant_cfg[1].parent_class")


def test_qc209_qc210_block_sizes(tmp_path):
    # llama weights are 16 wide (and 32 for lm_head/up/gate outputs): 24 does not divide 16/32
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*mlp*weight_quantizer'\n"
        "    cfg: {num_bits: 4, block_sizes: {-1: 24, type: static}}\n"
        "  - quantizer_name: '*self_attn*weight_quantizer'\n"
        "    cfg: {num_bits: 4, block_sizes: {-1: 12, type: static}}\n",
    )
    exceeds = only(found, "QC210")
    assert [d.line for d in exceeds] == [5] and "exceeds dimension -1 (16)" in exceeds[0].message
    pads = only(found, "QC209")
    assert sorted(d.line for d in pads) == [5, 7]  # down_proj is 32 wide; q/k/v/o 16
    assert all("padded" in d.message for d in pads)


def test_qc211_parent_class_misses_subclasses(tmp_path):
    attrs = QuantizerAttributeConfig(num_bits=8, axis=0)
    manifest = Manifest(
        model="subclass",
        registry_keys=["nn.Linear"],
        modules=[
            ModuleSite(
                name="fc",
                class_name="Linear",
                registry_key="nn.Linear",
                parent_class_keys=["nn.Linear"],
                subclass_of=["nn.Linear"],
                quantizers=[QuantizerSite(attribute="weight_quantizer", defaults=attrs)],
            ),
            ModuleSite(
                name="sub",
                class_name="MyLinear",
                registry_key="nn.Linear",
                parent_class_keys=[],
                subclass_of=["nn.Linear"],
                quantizers=[QuantizerSite(attribute="weight_quantizer", defaults=attrs)],
            ),
        ],
    )
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    parent_class: nn.Linear\n    cfg: {num_bits: 4, axis: 0}\n",
        manifest,
    )
    d = only(found, "QC211")[0]
    assert d.line == 5 and "sub.weight_quantizer" in d.message


def test_qc212_list_cfg_on_hard_disabled(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: 0}\n  - quantizer_name: '*embed_tokens.input_quantizer'\n"
        "    cfg: [{num_bits: 8}, {num_bits: e4m3}]\n",
    )
    d = only(found, "QC212")[0]
    assert d.line == 7 and "hard-disabled" in d.message


def test_qc213_sequential_length_mismatch(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: [{num_bits: 4, axis: 0}, {num_bits: e4m3}]\n"
        "  - quantizer_name: 'model.layers.0.mlp.up_proj.weight_quantizer'\n"
        "    parent_class: nn.Linear\n"
        "    cfg: [{num_bits: 8, axis: 0}]\n",
    )
    d = only(found, "QC213")[0]
    assert d.line == 8 and "only the first 1" in d.message


def test_list_cfg_on_an_existing_sequential_without_parent_class_nests(tmp_path):
    # without parent_class the children match too: Model Optimizer would nest (QC103)
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: [{num_bits: 4, axis: 0}, {num_bits: e4m3}]\n"
        "  - quantizer_name: 'model.layers.0.mlp.up_proj.weight_quantizer'\n"
        "    cfg: [{num_bits: 8, axis: 0}]\n",
    )
    d = only(found, "QC103")[0]
    assert (d.severity, d.line) == ("error", 6)


def test_errors_in_imported_files_point_into_them(tmp_path):
    (tmp_path / "unit.yaml").write_text(
        "# modelopt-schema: modelopt.torch.quantization.config.QuantizerCfgEntry\n"
        "quantizer_name: '*weight_quantizer'\ncfg: {num_bits: 8, axis: 0, enable: false}\n"
    )
    found = run(tmp_path, "imports:\n  w: unit.yaml\n" + HEADER + "  - $import: w\n", manifest=None)
    d = only(found, "QC203")[0]
    assert d.file.endswith("unit.yaml") and d.line == 3


@pytest.mark.parametrize(
    "name",
    [
        "INT8_DEFAULT_CFG",
        "FP8_DEFAULT_CFG",
        "NVFP4_DEFAULT_CFG",
        "W4A8_AWQ_BETA_CFG",
        "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
    ],
)
def test_presets_have_no_errors_on_the_llama_example(name):
    found = lint(presets.path(name), LLAMA)
    assert [d for d in found if d.severity == "error"] == []
    # the presets' model-agnostic exclusions (routers, vision towers...) match nothing here,
    # and 128-wide INT4 blocks exceed this toy model's 16/32-wide weights
    assert {d.code for d in found if d.severity == "warning"} <= {"QC210"}
    assert {d.code for d in found if d.severity == "info"} <= {"QC205"}


def test_every_rule_is_documented():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "lint-rules.md").read_text()
    import qconfig.lint.rules  # noqa: F401

    loader_and_compile = [
        "QC001",
        "QC002",
        "QC003",
        "QC004",
        "QC005",
        "QC006",
        "QC101",
        "QC102",
        "QC103",
    ]
    for code in [*RULES, *loader_and_compile]:
        assert f"## {code}" in docs, code


def _weights(pattern_part: str) -> list[str]:
    """Weight quantizer names of the llama manifest whose module name contains the part."""
    return [
        name
        for name, module, site in LLAMA.iter_sites()
        if site.attribute == "weight_quantizer" and pattern_part in module.name
    ]


def test_qc217_fp8_sweep_leaves_non_nvfp4_weights_at_max(tmp_path):
    mlp = _weights(".mlp.")
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*mlp*weight_quantizer'\n"
        "    cfg: {num_bits: 4, block_sizes: {-1: 16, type: static}}\n"
        "algorithm: local_hessian\n",
    )
    (hit,) = only(found, "QC217")
    assert (hit.line, hit.column) == (6, 12)
    assert f"{len(mlp)} ({mlp[0]}, {mlp[1]} and {len(mlp) - 2} more) weight quantizers" in (
        hit.message
    )
    assert "fp8_scale_sweep: false" in hit.message
    # NVFP4 static weights are what the sweep is for; turning it off searches everything
    for algorithm in ("{method: local_hessian, fp8_scale_sweep: false}", "mse"):
        quiet = run(
            tmp_path,
            HEADER + "  - quantizer_name: '*mlp*weight_quantizer'\n"
            "    cfg: {num_bits: 4, block_sizes: {-1: 16, type: static}}\n"
            f"algorithm: {algorithm}\n",
        )
        assert "QC217" not in codes(quiet)
    assert "QC217" not in codes(lint(presets.get("NVFP4_W4A4_WEIGHT_LOCAL_HESSIAN_CFG"), LLAMA))


def test_qc217_hessian_block_size_and_smoothquant_skips(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: 0}\n"
        "  - quantizer_name: '*self_attn*input_quantizer'\n"
        "    cfg: {num_bits: [4, 3]}\n"
        "algorithm:\n"
        "  - {method: local_hessian, fp8_scale_sweep: false, block_size: 12}\n"
        "  - {method: smoothquant, alpha: 0.5}\n",
    )
    hessian, smooth = only(found, "QC217")
    assert hessian.line == 9 and "block_size 12 does not divide" in hessian.message
    attention = [n.replace("weight", "input") for n in _weights(".self_attn.")]
    assert smooth.line == 10
    assert f"{len(attention)} ({attention[0]}, {attention[1]} and" in smooth.message
    assert "QC217" not in codes(lint(presets.get("INT8_SMOOTHQUANT_CFG"), LLAMA))


def test_qc217_headroom_without_nvfp4_inputs_is_a_note(tmp_path):
    found = run(
        tmp_path,
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 8, axis: 0}\n"
        "algorithm: nvfp4_act_headroom\n",
    )
    (hit,) = only(found, "QC217")
    assert hit.severity == "info" and "calibrates exactly like max" in hit.message
    config = presets.get("NVFP4_DEFAULT_CFG")
    config["algorithm"] = "nvfp4_act_headroom"
    assert "QC217" not in codes(lint(config, LLAMA))


def test_qc217_awq_skips_layers_that_are_not_linear_and_clip_skips_unblocked_weights(tmp_path):
    """The CNN's convolutions are not searched by any AWQ method; a per-channel linear weight
    is not clipped by awq_clip (and only by that part of awq_full)."""
    text = (
        HEADER + "  - quantizer_name: '*weight_quantizer'\n"
        "    cfg: {num_bits: 4, axis: 0}\n"
        "algorithm: {method: %s}\n"
    )
    convs = [
        s.name + ".weight_quantizer" for s in CNN.modules if s.registry_key.startswith("nn.Conv")
    ]
    assert convs
    for method in ("awq_lite", "awq_clip", "awq_full", "svdquant"):
        found = only(run(tmp_path, text % method, CNN), "QC217")
        assert any(
            f"{method} searches only linear layers: {len(convs)} (" in f.message for f in found
        )
    (embedding,) = only(run(tmp_path, text % "awq_lite"), "QC217")  # llama's embedding
    assert "awq_lite searches only linear layers: 1 (model.embed_tokens" in embedding.message
    linears = [n for n in _weights("") if "embed_tokens" not in n]
    for method in ("awq_clip", "awq_full"):
        _, clip = only(run(tmp_path, text % method), "QC217")
        assert f"{method} clips only block-quantized weights: {len(linears)} (" in clip.message
    assert "QC217" not in codes(lint(presets.get("INT4_AWQ_CFG"), LLAMA))
    assert "QC217" not in codes(lint(presets.get("NVFP4_AWQ_FULL_CFG"), LLAMA))

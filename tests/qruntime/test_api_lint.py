"""quantize()/compile_for() report ``qconfig lint``'s findings for the config on the model.

A config can compile and still be wrong for the model: ``FP8_KV_CFG`` alone matches no quantizer
of a model without KV-cache quantizers, and Model Optimizer then quantizes every Linear with its
INT8 defaults without a word. The Python API says so as the CLI would.
"""

import copy
import json
import logging
import re
import warnings

import modelopt.torch.quantization as mtq
import pytest
import qruntime
import torch
import zoo
from qconfig.cli import main
from qconfig.errors import ConfigError
from qconfig.quantize import QuantizeConfig
from torch import nn

QC205_KV = "<config>: QC205 '*[kv]_bmm_quantizer' matches no quantizer of LlamaLike (quant_cfg[0])"


def _fp8_kv() -> dict:
    return copy.deepcopy(mtq.FP8_KV_CFG)


def _lint_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, qruntime.QConfigLintWarning)]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_fp8_kv_alone_warns_that_its_entries_match_nothing():
    model = zoo.build("llama")
    with pytest.warns(qruntime.QConfigLintWarning) as record:
        qruntime.quantize(model, _fp8_kv(), zoo.forward_loop("llama"))
    messages = _lint_warnings(record)
    assert QC205_KV in messages
    assert any(m.startswith("<config>: QC204 ") for m in messages)
    # the warning points at this call, not at qruntime's internals
    assert {w.filename for w in record if "QC205" in str(w.message)} == {__file__}
    # the finding is true: Model Optimizer itself quantizes every Linear weight with INT8
    reference = zoo.build("llama")
    mtq.quantize(reference, _fp8_kv(), zoo.forward_loop("llama"))
    linears = [m for m in reference.modules() if isinstance(m, nn.Linear)]
    assert linears and all(
        m.weight_quantizer.is_enabled and m.weight_quantizer.num_bits == 8 for m in linears
    )
    ours = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(m.weight_quantizer.is_enabled and m.weight_quantizer.num_bits == 8 for m in ours)


def test_compile_for_warns_too_and_points_at_its_caller():
    with pytest.warns(qruntime.QConfigLintWarning) as record:
        qruntime.compile_for(zoo.build("llama"), _fp8_kv())
    assert QC205_KV in _lint_warnings(record)
    assert {w.filename for w in record if "QC205" in str(w.message)} == {__file__}


def test_lint_error_raises_before_the_model_is_touched():
    model = zoo.build("llama")
    before = _state(model)
    with pytest.raises(qruntime.QConfigLintError) as info:
        qruntime.quantize(model, _fp8_kv(), zoo.forward_loop("llama"), lint="error")
    assert isinstance(info.value, ConfigError)
    assert {d.code for d in info.value.diagnostics} == {"QC204", "QC205"}
    assert QC205_KV in str(info.value).splitlines()
    layer = model.model.layers[0]
    assert type(layer.self_attn.q_proj) is nn.Linear
    assert type(layer.mlp.down_proj) is nn.Linear
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(qruntime.QConfigLintError):
        qruntime.compile_for(model, _fp8_kv(), lint="error")


def test_lint_off_is_silent_and_still_quantizes():
    model = zoo.build("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning at all fails the test
        qruntime.quantize(model, _fp8_kv(), zoo.forward_loop("llama"), lint="off")
    assert type(model.model.layers[0].self_attn.q_proj) is not nn.Linear  # it was quantized


def test_lint_error_with_a_clean_config_quantizes():
    config = {
        "quant_cfg": [
            {"quantizer_name": "*", "enable": False},
            {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        ]
    }
    model = zoo.build("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        qruntime.quantize(model, config, zoo.forward_loop("llama"), lint="error")
    assert model.model.layers[0].self_attn.q_proj.weight_quantizer.num_bits == 8


def test_info_findings_are_logged_not_warned(caplog):
    model = zoo.build("llama")
    with warnings.catch_warnings(record=True) as record, caplog.at_level(logging.INFO, "qruntime"):
        warnings.simplefilter("always")
        qruntime.quantize(model, copy.deepcopy(mtq.INT8_DEFAULT_CFG), zoo.forward_loop("llama"))
    assert _lint_warnings(record) == []
    logged = [r.getMessage() for r in caplog.records if r.name == "qruntime"]
    # INT8_DEFAULT_CFG's exclusions for other architectures: info on a Llama-style model
    assert "<config>: QC205 '*router*' matches no quantizer of LlamaLike (quant_cfg[14])" in logged


def test_bad_lint_value_is_refused():
    with pytest.raises(ValueError, match="lint must be one of 'warn', 'error', 'off', not 'loud'"):
        qruntime.quantize(zoo.build("llama"), _fp8_kv(), lint="loud")


def test_a_quantize_config_instance_is_linted_as_written():
    """Pydantic's defaults (``cfg.enable=True`` in every entry) are not findings of the user."""
    with pytest.warns(qruntime.QConfigLintWarning) as record:
        qruntime.compile_for(zoo.build("llama"), QuantizeConfig.model_validate(_fp8_kv()))
    messages = _lint_warnings(record)
    assert QC205_KV in messages
    assert not any("QC203" in m for m in messages)


DICT_CONFIG = {
    "quant_cfg": [
        {"quantizer_name": "*", "enable": False},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 4, "axis": 0}},
        {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*q_prj*weight_quantizer", "cfg": {"num_bits": 8, "axis": 0}},
        {"quantizer_name": "*mlp*weight_quantizer", "cfg": {"num_bits": 4, "axis": 5}},
    ],
    "algorithm": "max",
}


def test_dict_messages_equal_the_cli_lines_for_the_same_file(tmp_path, capsys):
    config = copy.deepcopy(DICT_CONFIG)
    del config["quant_cfg"][4]  # QC104 (axis 5) is a compile error: checked below
    model = zoo.build("llama")
    with pytest.warns(qruntime.QConfigLintWarning) as record:
        qruntime.compile_for(model, copy.deepcopy(config))
    ours = _lint_warnings(record)
    assert len(ours) >= 2  # the shadowed entry and the one that matches nothing

    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config, indent=2))
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_text(qruntime.inventory(model, type(model).__name__).to_json())
    capsys.readouterr()
    main(["lint", str(config_file), "--manifest", str(manifest_file), "--color", "never"])
    cli = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith(str(config_file))
    ]
    cli_findings = sorted(re.sub(r"^.*?:\d+:\d+: ", "", line) for line in cli)
    our_findings = sorted(m.removeprefix("<config>: ") for m in ours)
    assert our_findings == cli_findings
    assert {"QC205", "QC206"} <= {f.split()[0] for f in our_findings}


def test_error_findings_are_raised_once_by_the_compile_in_warn_mode():
    """An error (here QC104, an axis the weight lacks) is the compile's to raise; it is not also
    warned, and ``lint="error"`` raises it as a lint error with the other findings."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError) as info:
            qruntime.compile_for(zoo.build("llama"), copy.deepcopy(DICT_CONFIG))
    assert not isinstance(info.value, qruntime.QConfigLintError)
    assert "QC104" in str(info.value)
    assert not any("QC104" in m for m in _lint_warnings(record))
    with pytest.raises(qruntime.QConfigLintError) as info:
        qruntime.compile_for(zoo.build("llama"), copy.deepcopy(DICT_CONFIG), lint="error")
    assert "QC104" in {d.code for d in info.value.diagnostics}

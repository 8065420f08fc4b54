"""qconfig.presets against Model Optimizer 0.47.0's dump, and the torch-free promise.

``presets-0.47.json`` was dumped from the 0.47.0 wheel; JSON turned tuples into lists and int
dict keys into strings, so the reference is restored before comparing.
"""

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import qconfig
import yaml
from qconfig import presets
from qconfig.loader import PRESETS_DIR

REFERENCE_FILE = Path(__file__).resolve().parents[1] / "data" / "presets-0.47.json"
REFERENCE = json.loads(REFERENCE_FILE.read_text())
PRESET_NAMES = [name for name in REFERENCE if not name.startswith("_")]
UNIT_NAMES = [name for name in REFERENCE if name.startswith("_") and name != "_note"]

_TUPLE_KEYS = {"num_bits", "scale_bits"}
_INT_KEY_DICTS = {"block_sizes", "bias"}


def restore(value, key=None):
    """Undo JSON's damage: ``[4, 3]`` → ``(4, 3)`` under num_bits/scale_bits, ``"-1"`` → ``-1``."""
    if isinstance(value, dict):
        return {
            (int(k) if key in _INT_KEY_DICTS and re.fullmatch(r"-?\d+", k) else k): restore(v, k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        if key in _TUPLE_KEYS:
            return tuple(value)
        return [restore(item) for item in value]
    return value


def test_restore_helper():
    raw = {"cfg": {"num_bits": [2, 1], "block_sizes": {"-1": 16, "scale_bits": [4, 3]}}}
    assert restore(raw) == {
        "cfg": {"num_bits": (2, 1), "block_sizes": {-1: 16, "scale_bits": (4, 3)}}
    }
    assert restore({"axis": [0, 1], "backend_extra_args": {"-1": 2}}) == {
        "axis": [0, 1],
        "backend_extra_args": {"-1": 2},
    }


def test_names_are_the_39_of_0_47():
    assert len(PRESET_NAMES) == 39
    assert sorted(presets.names()) == sorted(PRESET_NAMES)
    assert set(presets.UNITS) == set(UNIT_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES + UNIT_NAMES)
def test_preset_equals_model_optimizer(name):
    assert getattr(presets, name) == restore(REFERENCE[name])


def test_preset_values_have_model_optimizer_types():
    nvfp4 = presets.NVFP4_DEFAULT_CFG["quant_cfg"][1]["cfg"]
    assert type(nvfp4["num_bits"]) is tuple
    assert type(nvfp4["block_sizes"]["scale_bits"]) is tuple
    assert list(nvfp4["block_sizes"]) == [-1, "type", "scale_bits"]
    assert type(presets.INT8_DEFAULT_CFG["quant_cfg"]) is list
    assert len(presets.INT8_DEFAULT_CFG["quant_cfg"]) == 27
    assert "algorithm" not in presets.FP8_KV_CFG  # KV fragments have no algorithm key


def test_get_returns_a_deep_copy():
    first = presets.get("W4A8_AWQ_BETA_CFG")
    first["quant_cfg"][1]["cfg"][0]["block_sizes"][-1] = 64
    first["quant_cfg"].append({"quantizer_name": "*", "enable": True})
    assert presets.get("W4A8_AWQ_BETA_CFG") == restore(REFERENCE["W4A8_AWQ_BETA_CFG"])
    assert presets.W4A8_AWQ_BETA_CFG == restore(REFERENCE["W4A8_AWQ_BETA_CFG"])
    assert presets.get("_nvfp4_cfg") is not presets.get("_nvfp4_cfg")


def test_module_attributes_are_shared_like_model_optimizer():
    assert presets.FP8_DEFAULT_CFG is presets.FP8_DEFAULT_CFG
    assert qconfig.presets is presets


def test_unknown_names():
    with pytest.raises(AttributeError):
        presets.NOT_A_PRESET  # noqa: B018
    with pytest.raises(KeyError, match="Unknown preset"):
        presets.get("INT8")
    with pytest.raises(KeyError, match="Unknown preset"):
        presets.path("INT8")


def test_every_preset_has_one_file_and_every_file_one_preset():
    files = {presets.path(name) for name in presets.names()}
    assert all(path.is_file() and path.parent == PRESETS_DIR for path in files)
    assert files == set(PRESETS_DIR.glob("*.yaml"))
    for name in presets.UNITS:
        assert presets.path(name).is_file()


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_file_is_a_readable_composition(name):
    """Each file imports the packaged units by their public name, as users would."""
    text = presets.path(name).read_text()
    assert "# modelopt-schema: qconfig.QuantizeConfig" in text
    imports = yaml.safe_load(text)["imports"]
    assert imports and all(target.startswith("qconfig/units/") for target in imports.values())
    assert qconfig.load_config(presets.path(name)).model_dump(exclude_unset=True) == restore(
        REFERENCE[name]
    )


def test_units_use_exmy_strings_for_float_formats():
    text = (PRESETS_DIR / "units" / "nvfp4.yaml").read_text()
    assert "num_bits: e2m1" in text and "scale_bits: e4m3" in text


def test_package_metadata_has_no_torch():
    requirements = importlib.metadata.requires("qcc-qconfig") or []
    assert requirements  # pydantic, jsonschema, PyYAML
    names = {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower() for r in requirements}
    assert "torch" not in names
    assert {"pydantic", "pyyaml"} <= names


def test_presets_load_without_torch():
    script = textwrap.dedent(
        """
        import sys
        import qconfig
        from qconfig import presets
        for name in presets.names():
            config = qconfig.load_config(presets.path(name))
            assert config.model_dump(exclude_unset=True) == getattr(presets, name), name
            qconfig.QuantizeConfig.model_validate(presets.get(name))
        for name in presets.UNITS:
            presets.get(name)
        assert "torch" not in sys.modules, "qconfig imported torch"
        print(len(presets.names()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "39"

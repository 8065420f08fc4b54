"""Model Optimizer 0.47.0 as a test oracle: convert zoo models, read quantizer states.

Nothing here is used at runtime; it only turns Model Optimizer's objects into qconfig's data so
tests can compare them.
"""

import copy
import warnings

import modelopt.torch.quantization as mtq
import modelopt.torch.quantization.config as mc
import qruntime
import torch
import zoo
from modelopt.torch.quantization.conversion import replace_quant_module, set_quantizer_by_cfg
from modelopt.torch.quantization.model_quant import _check_weight_quantization_took_effect
from modelopt.torch.quantization.nn import QuantModuleRegistry, SequentialQuantizer, TensorQuantizer
from modelopt.torch.quantization.nn.modules.tensor_quantizer import HardDisabledTensorQuantizer
from qconfig.attributes import QuantizerAttributeConfig
from qconfig.manifest import Manifest, ModuleSite, QuantizerSite
from torch import nn


class _QuantFusedExperts(zoo.FusedExperts):
    """Model Optimizer quant class for the zoo's fused experts (per-expert weight quantizers)."""

    def _setup(self):
        n = self.gate_up_proj.shape[0]
        self.gate_up_proj_weight_quantizers = nn.ModuleList(TensorQuantizer() for _ in range(n))
        self.down_proj_weight_quantizers = nn.ModuleList(TensorQuantizer() for _ in range(n))
        self.gate_up_proj_input_quantizer = TensorQuantizer()
        self.down_proj_input_quantizer = TensorQuantizer()


def register_fused_experts() -> None:
    if zoo.FusedExperts not in QuantModuleRegistry:
        mtq.register(original_cls=zoo.FusedExperts, quantized_cls=_QuantFusedExperts)


def registry_keys() -> list[str]:
    return sorted(set(QuantModuleRegistry._key_registry.values()))


def tq_attributes(tq: TensorQuantizer) -> dict:
    """A TensorQuantizer's state as QuantizerAttributeConfig fields.

    docs/model-optimizer-rules.md, 'How a quantizer applies attributes'.
    """
    calibrator = tq._calibrator
    calib_name = type(calibrator).__name__
    return {
        "enable": not tq._disabled,
        "num_bits": tq._num_bits,
        "effective_bits": tq._effective_bits,
        "axis": tq._axis,
        "fake_quant": tq._fake_quant,
        "unsigned": tq._unsigned,
        "narrow_range": tq._narrow_range,
        "learn_amax": tq._learn_amax,
        "type": "dynamic" if tq._dynamic else "static",
        "block_sizes": tq._block_sizes,
        "bias": tq._bias,
        "trt_high_precision_dtype": tq._trt_high_precision_dtype,
        "calibrator": {"MaxCalibrator": "max", "HistogramCalibrator": "histogram"}.get(
            calib_name, calib_name
        ),
        "rotate": tq._rotate,
        "pass_through_bwd": tq._pass_through_bwd,
        "backend": tq.backend,
        "backend_extra_args": tq.backend_extra_args or None,
        "use_constant_amax": tq._use_constant_amax,
        "constant_amax": tq._constant_amax,
    }


def normalize_rotate(attrs: dict) -> dict:
    """A rotate config object as a plain dict (how the states compare)."""
    rotate = attrs["rotate"]
    if not isinstance(rotate, (bool, dict)):
        attrs = {**attrs, "rotate": dict(rotate.model_dump())}
    return attrs


def quantizer_states(model: nn.Module) -> dict[str, dict]:
    """Top-level quantizers (SQ children folded into their SQ): enable + attribute dicts."""
    out: dict[str, dict] = {}
    for name, module in model.named_modules():
        if isinstance(module, SequentialQuantizer):
            children = [normalize_rotate(tq_attributes(c)) for c in module]
            out[name] = {"enable": any(c["enable"] for c in children), "attributes": children}
        elif isinstance(module, TensorQuantizer):
            parent = name.rsplit(".", 1)[0] if "." in name else ""
            if (
                parent in out
                and "attributes" in out[parent]
                and isinstance(model.get_submodule(parent), SequentialQuantizer)
            ):
                continue
            attrs = normalize_rotate(tq_attributes(module))
            out[name] = {"enable": attrs["enable"], "attributes": attrs}
    return out


def plan_states(plan) -> dict[str, dict]:
    """The same shape as quantizer_states, from a qconfig Plan."""
    out = {}
    for name, q in plan.quantizers.items():
        if q.is_sequential:
            attrs = [normalize_rotate(a.model_dump()) for a in q.attributes]
        else:
            attrs = normalize_rotate(q.attributes.model_dump())
        out[name] = {"enable": q.enable, "attributes": attrs}
    return out


def converted(model: nn.Module) -> nn.Module:
    """A deep copy converted by Model Optimizer, before any config is applied."""
    model = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        replace_quant_module(model)
    return model


def apply(model: nn.Module, quant_cfg) -> nn.Module:
    """Convert and apply ``quant_cfg`` once, as ``mtq.quantize`` does (no calibration),
    including 0.47.0's weight check (docs/model-optimizer-rules.md, 'Weight-quantization
    check')."""
    model = converted(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        set_quantizer_by_cfg(model, quant_cfg)
    _check_weight_quantization_took_effect(
        model, mc.QuantizeConfig(quant_cfg=quant_cfg, algorithm=None)
    )
    return model


def check_weights(model: nn.Module, quant_cfg) -> None:
    """0.47.0's post-application weight check, raising as mtq.quantize does.

    docs/model-optimizer-rules.md, 'Weight-quantization check'.
    """
    _check_weight_quantization_took_effect(
        model, mc.QuantizeConfig(quant_cfg=quant_cfg, algorithm=None)
    )


def manifest_of(model: nn.Module, label: str = "") -> Manifest:
    """A manifest read off Model Optimizer's converted copy of ``model``."""
    quant = converted(model)
    keys = registry_keys()
    key_classes = {k: QuantModuleRegistry[k] for k in keys}
    modules: dict[str, ModuleSite] = {}
    qmods = {
        name: m
        for name, m in quant.named_modules()
        if type(m) in QuantModuleRegistry._dynamic_classes.values()
    }
    originals = {dm: cls for cls, dm in QuantModuleRegistry._dynamic_classes.items()}
    for name, m in qmods.items():
        original = originals[type(m)]
        weight = getattr(m, "weight", None)
        if not isinstance(weight, torch.Tensor):
            weight = None
        modules[name] = ModuleSite(
            name=name,
            class_name=type(m).__name__.removeprefix("Quant"),
            registry_key=QuantModuleRegistry.get_key_from_dm(m),
            parent_class_keys=[k for k, cls in key_classes.items() if isinstance(m, cls)],
            weight_shape=list(weight.shape) if weight is not None else None,
            weight_dtype=str(weight.dtype).removeprefix("torch.") if weight is not None else None,
            subclass_of=[
                key
                for cls, key in QuantModuleRegistry._key_registry.items()
                if issubclass(original, cls)
            ],
        )
    for name, tq in quant.named_modules():
        if not isinstance(tq, TensorQuantizer):
            continue
        owner = max((m for m in modules if name.startswith(m + ".") or m == ""), key=len)
        attribute = name[len(owner) + 1 :] if owner else name
        modules[owner].quantizers.append(
            QuantizerSite(
                attribute=attribute,
                defaults=QuantizerAttributeConfig.model_validate(tq_attributes(tq)),
                hard_disabled=isinstance(tq, HardDisabledTensorQuantizer),
            )
        )
    ordered = [m for m in modules.values() if m.quantizers]
    return Manifest(model=label, registry_keys=keys, modules=ordered)


def normalized_states(states: dict) -> dict:
    """``qruntime.quantizer_states`` in the shape of :func:`quantizer_states` (enable and
    attributes; rotate configs as dicts), for comparison with Model Optimizer's."""
    out = {}
    for name, state in states.items():
        attrs = state["attributes"]
        if isinstance(attrs, list):
            attrs = [normalize_rotate(a) for a in attrs]
        else:
            attrs = normalize_rotate(attrs)
        out[name] = {"enable": state["enable"], "attributes": attrs}
    return out


def quantizer_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The quantizers' calibration buffers (``_amax``, ``_pre_quant_scale``, ...) of the state
    dict, by key."""
    return {
        k: v
        for k, v in model.state_dict().items()
        if "_quantizer" in k and k.rsplit(".", 1)[-1].startswith("_")
    }


def zoo_outputs(model: nn.Module, name: str) -> torch.Tensor:
    """The outputs of zoo model ``name`` on unseen inputs (seed 2)."""
    with torch.no_grad():
        return model(*zoo.example_inputs(name, seed=2))


def quantize_both(model: nn.Module, cfg, forward_loop) -> tuple[nn.Module, nn.Module]:
    """(Model Optimizer's, qruntime's): each quantizes its own deep copy of ``model`` with the
    same config and loop, warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = mtq.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
        ours = qruntime.quantize(copy.deepcopy(model), copy.deepcopy(cfg), forward_loop)
    return ref, ours


def assert_same_model(ref: nn.Module, ours: nn.Module) -> None:
    """Quantizer states, then every state_dict entry (weights and buffers) bit for bit, with the
    same dtypes and keys in the same order."""
    assert normalized_states(qruntime.quantizer_states(ours)) == quantizer_states(ref)
    expected, got = ref.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def assert_same_buffers(ref: nn.Module, ours: nn.Module) -> None:
    """The same ``state_dict`` keys in the same order, and every calibration buffer of Model
    Optimizer's model (there must be some) equal to ours bit for bit, with the same dtype."""
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref_buffers, our_buffers = quantizer_buffers(ref), quantizer_buffers(ours)
    assert ref_buffers, "nothing was calibrated"
    for key, value in ref_buffers.items():
        assert our_buffers[key].dtype == value.dtype, key
        assert torch.equal(our_buffers[key], value), key

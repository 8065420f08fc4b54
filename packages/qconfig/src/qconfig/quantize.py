"""The top-level ``QuantizeConfig`` (docs/model-optimizer-rules.md, 'QuantizeConfig'); ``CompressConfig`` is in
:mod:`qconfig.compress`.

Deliberately stricter than Model Optimizer 0.47.0: ``algorithm`` is validated here, at config
time, against the method registry. Model Optimizer only type-checks it and reports ``"awq"`` or
an unknown field after it has already converted the model ('quantize and calibrate'). The value keeps the form the
user gave (string, dict, list), so dumps stay identical to Model Optimizer's.
"""

from typing import Any

from pydantic import Field, ValidationError, field_validator

from qconfig.algorithms import QuantizeAlgorithmConfig, algorithm_class, known_methods
from qconfig.base import ConfigBase
from qconfig.entries import QuantizerCfgEntry
from qconfig.normalize import expand_quant_cfg

__all__ = ["CompressConfig", "QuantizeConfig", "resolve_algorithms"]  # noqa: F822 (__getattr__)

AlgorithmForm = str | dict | QuantizeAlgorithmConfig | None


def _resolve_one(value: AlgorithmForm) -> QuantizeAlgorithmConfig:
    if isinstance(value, QuantizeAlgorithmConfig):
        return value
    if value is None or isinstance(value, str):
        return algorithm_class(value)()
    if "method" not in value:
        raise ValueError(
            f"An algorithm mapping needs a 'method' key, got {value!r}; known methods: "
            f"{', '.join(known_methods())} (or null)."
        )
    cls = algorithm_class(value["method"])
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(config)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ValueError(
            f"invalid {value['method']!r} algorithm config: {details} (known methods: "
            f"{', '.join(known_methods())}; null for no calibration)."
        ) from None


def resolve_algorithms(algorithm: Any) -> tuple[QuantizeAlgorithmConfig, ...]:
    """``algorithm`` in any accepted form → validated configs, one per calibration step.

    ``None`` → ``()`` (no calibration); ``"max"`` → ``(MaxCalibConfig(),)``; a list → one
    config per element, with ``None`` elements dropped.
    """
    if algorithm is None:
        return ()
    forms = algorithm if isinstance(algorithm, list) else [algorithm]
    return tuple(_resolve_one(form) for form in forms if form is not None)


class QuantizeConfig(ConfigBase):
    """What to quantize (``quant_cfg``) and how to calibrate it (``algorithm``)."""

    quant_cfg: list[QuantizerCfgEntry] = Field(
        default=[{"quantizer_name": "*", "cfg": {"num_bits": 8, "axis": None}}],
        validate_default=True,
        description=(
            "Ordered entries; for each quantizer the last matching entry wins. Start with "
            "`{quantizer_name: '*', enable: false}` to deny everything, then enable what you "
            "want quantized."
        ),
    )
    algorithm: AlgorithmForm | list[AlgorithmForm] = Field(
        default="max",
        validate_default=True,
        description=(
            "Calibration: a method name, a mapping with `method` and its settings, a list of "
            "those (run in order), or null for no calibration."
        ),
    )
    effective_bits: float | None = Field(
        default=None, description="Effective bits per element for the autoquant cost, (0, 16]."
    )

    @field_validator("quant_cfg", mode="before")
    @classmethod
    def _normalize(cls, v: Any) -> Any:
        return [e.value for e in expand_quant_cfg(v)]

    @field_validator("algorithm")
    @classmethod
    def _validate_algorithm(cls, v: Any) -> Any:
        if not isinstance(v, list):
            resolve_algorithms(v)
            return v
        for index, form in enumerate(v):  # name the failing step of a list
            try:
                resolve_algorithms(form)
            except ValueError as exc:
                raise ValueError(f"algorithm[{index}]: {exc}") from None
        return v

    @field_validator("effective_bits")
    @classmethod
    def _effective_bits(cls, v: float | None) -> float | None:
        if v is not None and not (0 < v <= 16):
            raise ValueError(f"effective_bits must be in (0, 16], got {v}")
        return v

    def algorithms(self) -> tuple[QuantizeAlgorithmConfig, ...]:
        """The validated calibration steps this config asks for."""
        return resolve_algorithms(self.algorithm)


def __getattr__(name: str) -> Any:
    # ``CompressConfig`` lives in :mod:`qconfig.compress` (a lint run never needs it); this
    # keeps ``from qconfig.quantize import CompressConfig`` working.
    if name == "CompressConfig":
        from qconfig.compress import CompressConfig

        return CompressConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

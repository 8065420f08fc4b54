"""QC217: a calibration algorithm that will leave some of the quantizers it names alone.

Several of Model Optimizer's algorithms skip quantizers without saying so at run time, so a
long calibration can end with most of the model calibrated by plain ``max``. Knowing the plan,
the skips are certain before any data is read:

* ``mse`` / ``local_hessian`` with ``fp8_scale_sweep`` (local_hessian's default) search only
  NVFP4 static-block weights; every other weight keeps its max amax;
* ``local_hessian`` falls back to the plain squared error for a 2-D weight whose input dimension
  is not a multiple of its ``block_size``;
* ``smoothquant`` smooths only layers whose enabled input and weight quantizers are 8-bit
  integers; the others get max calibration;
* ``nvfp4_act_headroom`` acts only on NVFP4 dynamic-block input quantizers; with none it is
  ``max``;
* the AWQ family (``awq_lite``, ``awq_clip``, ``awq_full``, ``svdquant``) searches only linear
  layers (a 2-D weight beside an input quantizer, embeddings excluded); the weights of other
  layers (convolutions, say) get max calibration. ``awq_clip`` (alone or in ``awq_full``) clips
  only block-quantized weights; per-channel or per-tensor ones keep their max amax.
"""

from collections.abc import Iterator

from qconfig.lint.context import Finding, LintContext
from qconfig.lint.registry import rule

_EXAMPLES = 2


def _first_spec(plan):
    """The spec a calibration reads: the quantizer's, or its first element's (sequential)."""
    return plan.spec[0] if isinstance(plan.spec, tuple) else plan.spec


def _enabled(ctx: LintContext, suffix: str) -> Iterator[tuple[str, object, object]]:
    """(name, module site, spec) of every enabled quantizer whose attribute ends in ``suffix``."""
    plans = ctx.compiled.plan.quantizers
    for name, module, site in ctx.manifest.iter_sites():
        plan = plans.get(name)
        if plan is None or not plan.enable or not site.attribute.endswith(suffix):
            continue
        spec = _first_spec(plan)
        if spec.enable:
            yield name, module, spec


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES])
    more = f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
    return f"{len(names)} ({shown}{more})"


def _sweep_skips(ctx: LintContext, config) -> Iterator[str]:
    if not getattr(config, "fp8_scale_sweep", False):
        return
    skipped = [
        name
        for name, _, spec in _enabled(ctx, "weight_quantizer")
        if not spec.is_dynamic
        and not spec.is_mx
        and not (spec.family == "nvfp4" and spec.is_static_block)
    ]
    if skipped:
        yield (
            f"{config.method} with fp8_scale_sweep searches only NVFP4 static-block weights: "
            f"{_listed(skipped)} weight quantizers keep their max amax; set fp8_scale_sweep: "
            "false to search them"
        )


def _hessian_block_misfits(ctx: LintContext, config) -> Iterator[str]:
    if config.method != "local_hessian" or not config.block_size:
        return
    sweep = bool(config.fp8_scale_sweep)
    misfits = [
        name
        for name, module, spec in _enabled(ctx, "weight_quantizer")
        if (not sweep or (spec.family == "nvfp4" and spec.is_static_block))  # searched at all
        and module.weight_shape is not None
        and len(module.weight_shape) == 2
        and module.weight_shape[1] % config.block_size
    ]
    if misfits:
        yield (
            f"local_hessian block_size {config.block_size} does not divide the input dimension "
            f"of {_listed(misfits)} weights: they are searched with the plain squared error"
        )


def _smoothquant_skips(ctx: LintContext, config) -> Iterator[str]:
    if config.method != "smoothquant":
        return
    weights = {module.name: spec for _, module, spec in _enabled(ctx, "weight_quantizer")}
    skipped = [
        name
        for name, module, spec in _enabled(ctx, "input_quantizer")
        if module.name in weights and (spec.num_bits != 8 or weights[module.name].num_bits != 8)
    ]
    if skipped:
        yield (
            f"smoothquant smooths only 8-bit integer layers: {_listed(skipped)} input "
            "quantizers belong to layers it skips (they get max calibration)"
        )


_AWQ_METHODS = ("awq_lite", "awq_clip", "awq_full", "svdquant")


def _awq_skips(ctx: LintContext, config) -> Iterator[str]:
    if config.method not in _AWQ_METHODS:
        return
    linear, other = [], []
    for name, module, spec in _enabled(ctx, "weight_quantizer"):
        shape = module.weight_shape
        if shape is None:
            continue
        is_linear = (
            len(shape) == 2
            and module.registry_key != "nn.Embedding"
            and any(q.attribute == "input_quantizer" for q in module.quantizers)
        )
        (linear if is_linear else other).append((name, spec))
    if other:
        yield (
            f"{config.method} searches only linear layers: {_listed([n for n, _ in other])} "
            "weight quantizers of other layers get max calibration"
        )
    if config.method in ("awq_clip", "awq_full"):
        unclipped = [name for name, spec in linear if spec.block_sizes is None]
        if unclipped:
            yield (
                f"{config.method} clips only block-quantized weights: {_listed(unclipped)} "
                "weight quantizers keep their max amax in the clip search"
            )


def _headroom_has_nothing(ctx: LintContext, config) -> Iterator[str]:
    if config.method != "nvfp4_act_headroom":
        return
    eligible = [
        name
        for name, _, spec in _enabled(ctx, "input_quantizer")
        if spec.family == "nvfp4" and spec.is_dynamic_block and not spec.is_dynamic
    ]
    if not eligible:
        yield (
            "nvfp4_act_headroom acts on NVFP4 dynamic-block input quantizers and this plan "
            "has none: it calibrates exactly like max"
        )


@rule(
    "QC217",
    "warning",
    "the calibration algorithm skips some of the quantizers it is meant to calibrate",
    needs_manifest=True,
)
def check(ctx: LintContext):
    algorithms = ctx.compiled.plan.algorithm
    several = isinstance(ctx.config.algorithm, list)
    for index, config in enumerate(algorithms):
        path = (*ctx.raw_path, "algorithm", index) if several else (*ctx.raw_path, "algorithm")
        for finder in (_sweep_skips, _hessian_block_misfits, _smoothquant_skips, _awq_skips):
            for message in finder(ctx, config):
                yield Finding(message, path)
        nested = getattr(config, "weight_scale_algorithm", None)
        if nested is not None:  # nvfp4_act_headroom's weight scales
            for finder in (_sweep_skips, _hessian_block_misfits):
                for message in finder(ctx, nested):
                    yield Finding(message, (*path, "weight_scale_algorithm"))
        for message in _headroom_has_nothing(ctx, config):
            yield Finding(message, path, severity="info")

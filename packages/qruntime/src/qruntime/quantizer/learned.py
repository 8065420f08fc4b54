"""``LearnedAmaxQuantizer``: a static-block weight quantizer whose block amaxes are learned.

What ``lsq`` turns a calibrated static-block weight quantizer into (docs/qat.md). Why a subclass
converted in place (the class of the existing module is swapped, as Model Optimizer 0.47.0 does
with ``enable_lsq``): the quantizer keeps its place, its name in ``state_dict`` and everything
configured on it, so optimizers, checkpoints and the rollback of ``apply_plan`` see an ordinary
module whose ``_amax`` buffer was replaced by two tensors:

* ``_amax_post`` — the dequantization amax; an ``nn.Parameter`` when ``"post"`` is learnable,
  else a buffer;
* ``_amax_pre`` — the quantization amax, likewise for ``"pre"``; absent when ``tied_amax`` (pre
  *is* post, one tensor).

Both start as the calibrated ``_amax`` in the weight's dtype (Model Optimizer keeps them there
for FSDP2's mixed precision). The forward is :func:`qruntime.numerics.lsq.lsq_fake_quant` on
the blocks of the last dim; ``global_amax`` (NVFP4) stays a buffer and sets the FP8 grid of the
steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from qruntime.numerics.blocks import StaticBlockPlan, static_block_plan
from qruntime.numerics.lsq import lsq_block_scale, lsq_fake_quant, lsq_max_bound
from qruntime.numerics.rotation import rotate as hadamard_rotate
from qruntime.quantizer.tensor import TensorQuantizer

__all__ = ["LearnedAmaxError", "LearnedAmaxQuantizer", "learnable_set"]

_SIDES = ("pre", "post")


class LearnedAmaxError(ValueError):
    """A quantizer that cannot learn its amax (not static-block, not calibrated, a layout or
    option LSQ does not support); the message names the quantizer and what to change."""


def learnable_set(learnable_amax: str | Iterable[str]) -> list[str]:
    """``learnable_amax`` as a sorted list (``"post"`` → ``["post"]``); unknown names refused."""
    learn = {learnable_amax} if isinstance(learnable_amax, str) else set(learnable_amax)
    unknown = learn - set(_SIDES)
    if unknown:
        raise LearnedAmaxError(f"learnable_amax may hold 'pre' and 'post', not {sorted(unknown)}")
    return sorted(learn)


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor parameter (FSDP2), autograd kept; other tensors as given."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


class LearnedAmaxQuantizer(TensorQuantizer):
    """A converted static-block weight quantizer (module docstring); build with
    :meth:`convert`."""

    _learnable_amax: list[str]
    _tied_amax: bool
    _quantize_scales: bool
    _quantize_pre_scale: bool
    _lsq_plan: StaticBlockPlan | None
    _quant_max_bound: float

    @classmethod
    def convert(
        cls,
        quantizer: TensorQuantizer,
        *,
        learnable_amax: str | Iterable[str] = ("post",),
        tied_amax: bool = False,
        quantize_pre_scale: bool = True,
        quantize_scales: bool | None = None,
        dtype: torch.dtype | None = None,
        ndim: int | None = None,
    ) -> LearnedAmaxQuantizer:
        """Turn ``quantizer`` (calibrated, static blocks along the last dim) into a learned-amax
        quantizer in place and return it.

        ``quantize_scales`` (default: the format's ``scale_bits`` are E4M3) FP8-quantizes the
        steps against ``global_amax``; ``quantize_pre_scale=False`` leaves the pre step
        unquantized. ``dtype`` is the amaxes' dtype (the weight's, in ``lsq``); ``ndim``, the
        rank of the tensor it quantizes, lets a block axis other than the last be refused here
        rather than at the first forward.
        """
        name = quantizer.__dict__.get("_qruntime_name") or "quantizer"
        if isinstance(quantizer, LearnedAmaxQuantizer):
            raise LearnedAmaxError(f"{name}: already learns its amax")
        learn = learnable_set(learnable_amax)
        if tied_amax and set(learn) not in (set(), set(_SIDES)):
            raise LearnedAmaxError(
                f"tied_amax=True requires learnable_amax to be [] or ['pre', 'post'], got {learn}"
            )
        spec = quantizer.spec
        if not quantizer.is_static_block_quant:
            raise LearnedAmaxError(f"{name}: only static-block quantizers can learn their amax")
        axes = [k for k in (spec.block_sizes or {}) if isinstance(k, int)]
        if len(axes) != 1 or (ndim is not None and axes[0] % ndim != ndim - 1):
            raise LearnedAmaxError(
                f"{name}: learned amaxes need blocks along the last dim only; block_sizes="
                f"{dict(spec.block_sizes or {})}"
            )
        amax = quantizer.amax
        if amax is None:
            raise LearnedAmaxError(f"{name}: has no calibrated amax to start from; calibrate first")
        bound = lsq_max_bound(spec.num_bits, spec.unsigned, spec.narrow_range)
        if quantize_scales is None:
            quantize_scales = (spec.block_sizes or {}).get("scale_bits") == (4, 3)
        if quantize_scales and quantizer.global_amax is None:
            raise LearnedAmaxError(f"{name}: FP8-quantized steps need a global_amax; none is set")
        start = amax.detach().float()
        if dtype is not None:
            start = start.to(dtype)
        delattr(quantizer, "_amax")
        quantizer.__class__ = cls
        assert isinstance(quantizer, LearnedAmaxQuantizer)
        quantizer.__dict__.update(
            _learnable_amax=learn,
            _tied_amax=tied_amax,
            _quantize_scales=bool(quantize_scales),
            _quantize_pre_scale=quantize_pre_scale,
            _lsq_plan=None,
            _quant_max_bound=bound,
        )
        quantizer.set_amax_tensor("post", start.clone(), learnable="post" in learn)
        if not tied_amax:
            quantizer.set_amax_tensor("pre", start.clone(), learnable="pre" in learn)
        return quantizer

    def revert(self) -> TensorQuantizer:
        """Undo :meth:`convert` in place: the learned amaxes are dropped and the module is a
        plain, uncalibrated ``TensorQuantizer`` again (same object, configuration, hooks).

        Why: ``restore_state`` onto a model that was converted before must give the file's
        state, which may have this quantizer learned differently or not at all."""
        for attr in ("_amax_post", "_amax_pre"):
            self._parameters.pop(attr, None)
            self._buffers.pop(attr, None)
        for attr in (
            "_learnable_amax",
            "_tied_amax",
            "_quantize_scales",
            "_quantize_pre_scale",
            "_lsq_plan",
            "_quant_max_bound",
        ):
            self.__dict__.pop(attr, None)
        self.__class__ = TensorQuantizer  # type: ignore[assignment]
        return self

    def set_amax_tensor(self, side: str, value: torch.Tensor, *, learnable: bool) -> None:
        """(Re)place the ``pre`` or ``post`` amax: a parameter when learnable, else a buffer."""
        if side not in _SIDES:
            raise LearnedAmaxError(f"side must be 'pre' or 'post', not {side!r}")
        attr = f"_amax_{side}"
        self._parameters.pop(attr, None)
        self._buffers.pop(attr, None)
        if learnable:
            self.register_parameter(attr, nn.Parameter(value.detach().clone()))
        else:
            self.register_buffer(attr, value.detach().clone())

    # ------------------------------------------------------------------ Model Optimizer API
    @property
    def amax_post(self) -> torch.Tensor:
        """The dequantization amax."""
        return self._amax_post

    @property
    def amax_pre(self) -> torch.Tensor:
        """The quantization amax (``amax_post`` when tied)."""
        return self.amax_post if self._tied_amax else self._amax_pre

    @property
    def amax(self) -> Any:
        """The tied amax; untied LSQ has two, read :attr:`amax_pre` / :attr:`amax_post`."""
        if not self._tied_amax:
            raise RuntimeError(
                "LSQ with untied amaxes has separate pre and post parameters. "
                "Access them via amax_pre / amax_post."
            )
        return self.amax_post

    @amax.setter
    def amax(self, value: Any) -> None:
        raise LearnedAmaxError(
            "a learned-amax quantizer has no single amax to set: use set_amax_tensor('pre' or "
            "'post', value, learnable=...)"
        )

    @property
    def learnable_amax(self) -> list[str]:
        return list(self._learnable_amax)

    @property
    def tied_amax(self) -> bool:
        return self._tied_amax

    @property
    def quantize_scales(self) -> bool:
        return self._quantize_scales

    @property
    def quantize_pre_scale(self) -> bool:
        return self._quantize_pre_scale

    # ------------------------------------------------------------------ forward
    def steps(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s_pre, s_post)``: the per-block steps the forward uses (differentiable)."""
        ga = self.global_amax if self._quantize_scales else None
        bound = self._quant_max_bound
        post = lsq_block_scale(_local(self.amax_post), bound, ga)
        pre_ga = ga if self._quantize_pre_scale else None
        pre = lsq_block_scale(_local(self.amax_pre), bound, pre_ga)
        return pre, post

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``cast(w / s_pre) * s_post`` per block (module docstring), between the
        ``pre_quant_scale`` and rotation steps every quantizer runs; a disabled quantizer
        passes ``x`` through as any quantizer does."""
        if not self.is_enabled or x.numel() == 0:
            return super().forward(x)
        pqs = self.pre_quant_scale
        if pqs is not None:
            x = x * pqs
        rotation = self.spec.rotate
        if rotation.enable:
            x = hadamard_rotate(x, rotation)
        plan = self._lsq_plan
        if plan is None or plan.shape != tuple(x.shape):
            block_sizes = self.spec.block_sizes or {}
            if any(isinstance(k, int) and k % x.dim() != x.dim() - 1 for k in block_sizes):
                raise LearnedAmaxError(
                    f"{self.__dict__.get('_qruntime_name') or 'quantizer'}: learned amaxes need "
                    f"blocks along the last dim only; block_sizes={dict(block_sizes)}"
                )
            plan = static_block_plan(x.shape, block_sizes)
            self.__dict__["_lsq_plan"] = plan
        pre, post = self.steps()
        blocks = plan.to_blocks(x).reshape(pre.numel(), -1)
        spec = self.spec
        y = lsq_fake_quant(blocks, pre, post, spec.num_bits, spec.unsigned, spec.narrow_range)
        y = plan.from_blocks(y.reshape(plan.reshape))
        return hadamard_rotate(y, rotation) if rotation.enable and rotation.rotate_back else y

    def extra_repr(self) -> str:
        if not self.is_enabled:
            return "disabled"
        learn = "frozen" if not self._learnable_amax else f"learn={self._learnable_amax}"
        shape = tuple(self.amax_post.shape)
        tied = "tied " if self._tied_amax else ""
        return f"LSQ {tied}amax {shape} {learn}"

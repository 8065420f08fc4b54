"""Quant mixin for Hugging Face attention modules: quantizers on the operands of the two
attention matmuls (KV-cache quantization).

A Hugging Face attention ``forward`` computes q, k and v (projections, RoPE, cache update) and
hands them to an *attention kernel*: ``ALL_ATTENTION_FUNCTIONS.get_interface(impl,
eager_attention_forward)(self, q, k, v, mask, ...)``. The tensors the kernel receives are the
ones to quantize: post-RoPE, after the cache update (the whole cache every step), before the
kernel's own GQA ``repeat_kv``. Model Optimizer swaps the kernel by writing the process-wide
interface registry or the module global for the duration of the call.

This mixin does not write anything global. It runs a copy of the original ``forward`` function
whose globals are a per-call copy of its own module's globals, with the two names the forward
resolves the kernel through (``ALL_ATTENTION_FUNCTIONS`` and ``eager_attention_forward``)
bound to views that hand out the quantizing kernel. So the kernel the forward *actually*
chooses is the one quantized (also sdpa with ``output_attentions``), an inherited ``forward``
defined in another module is handled (its own globals are copied), other models and threads
never see a change, and nothing can be left patched by an exception.

A ``forward`` behind a decorator that keeps the function it wraps somewhere other than a
closure cell cannot be copied that way: it then runs as it is while every bmm quantizer is off,
and raises once one is enabled.

``p_bmm_quantizer`` (the softmax probabilities) is applied by running the eager kernel of the
forward's module with ``softmax`` bound to "softmax, then quantize" (again through copied
globals). Under a fused kernel (sdpa, flash) the eager kernel runs instead, with the fused
kernel's boolean/implicit-causal mask turned into the eager kernel's additive mask. An enabled
``p_bmm_quantizer`` is never ignored: a kernel whose softmax cannot be reached raises.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from qruntime.modules.base import INT8_PER_TENSOR, QuantizerSlot, QuantModule
from qruntime.modules.convert import original_class

__all__ = [
    "ATTENTION_QUANTIZERS",
    "KERNEL_GLOBALS",
    "QuantAttention",
    "forward_globals",
    "rebind_globals",
]

#: The quantizers every converted attention module gets, in creation order (all INT8 per
#: tensor, enabled, dynamic: Model Optimizer's default TensorQuantizer).
ATTENTION_QUANTIZERS = ("q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer")

#: The global names through which a Hugging Face attention forward finds its kernel.
KERNEL_GLOBALS = ("ALL_ATTENTION_FUNCTIONS", "eager_attention_forward")


def _innermost(fn: Callable[..., Any]) -> types.FunctionType:
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"{fn!r} is not a Python function")
    return fn


def forward_globals(fn: Callable[..., Any]) -> dict[str, Any]:
    """The globals of the function a (possibly decorated) ``fn`` finally runs: the module whose
    names its body resolves."""
    return _innermost(fn).__globals__


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def rebind_globals(fn: Callable[..., Any], overrides: dict[str, Any]) -> types.FunctionType:
    """A copy of ``fn`` whose innermost function (below ``functools.wraps`` decorators) sees
    its module's globals with ``overrides`` applied; the module itself is not changed.

    Each decorator level is copied with the closure cell that holds the next level pointing at
    that level's copy. ``TypeError`` if a level cannot be followed that way.
    """
    wrapped = getattr(fn, "__wrapped__", None)
    if not isinstance(fn, types.FunctionType):
        raise TypeError(f"{fn!r} is not a Python function")
    if wrapped is None:
        namespace = dict(fn.__globals__)
        namespace.update(overrides)
        copy = types.FunctionType(
            fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__
        )
    else:
        inner = rebind_globals(wrapped, overrides)
        cells = fn.__closure__ or ()
        if not any(_cell_value(c) is wrapped for c in cells):
            raise TypeError(
                f"cannot follow the decorator {fn.__qualname__}: no closure cell holds the "
                "function it wraps"
            )
        closure = tuple(types.CellType(inner) if _cell_value(c) is wrapped else c for c in cells)
        copy = types.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, closure
        )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__ = fn.__qualname__
    copy.__dict__.update(fn.__dict__)
    if wrapped is not None:
        copy.__wrapped__ = inner  # type: ignore[attr-defined]
    return copy


class _Overlay:
    """A read-only view of a module (``torch``, ``torch.nn``, ...) with some attributes
    replaced; everything else is the module's own."""

    def __init__(self, base: Any, overrides: dict[str, Any]) -> None:
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_overrides", overrides)

    def __getattr__(self, name: str) -> Any:
        overrides = object.__getattribute__(self, "_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_base"), name)


def _enabled(quantizer: nn.Module) -> bool:
    children = list(quantizer.children())
    if children:  # a SequentialQuantizer
        return any(_enabled(child) for child in children)
    return bool(getattr(quantizer, "is_enabled", False))


class _KernelInterface:
    """``ALL_ATTENTION_FUNCTIONS`` as the copied forward sees it: every kernel it hands out
    quantizes first."""

    def __init__(self, interface: Any, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]):
        self._interface = interface
        self._wrap = wrap

    def get_interface(self, attn_implementation: Any, default: Callable[..., Any]) -> Any:
        return self._wrap(self._interface.get_interface(attn_implementation, default))

    def get(self, key: Any, default: Any = None) -> Any:
        found = self._interface.get(key, default)
        return self._wrap(found) if callable(found) else found

    def __getitem__(self, key: Any) -> Any:
        return self._wrap(self._interface[key])

    def __contains__(self, key: Any) -> bool:
        return key in self._interface

    def __getattr__(self, name: str) -> Any:
        return getattr(self._interface, name)


class _Call:
    """One forward call: how many kernel calls it made (a forward whose kernel is never reached
    would silently skip enabled quantizers)."""

    def __init__(self, module: nn.Module, eager: Callable[..., Any] | None) -> None:
        self.module = module
        self.eager = eager
        self.kernel_calls = 0
        self.wrapped: dict[int, Callable[..., Any]] = {}

    def wrap(self, kernel: Callable[..., Any]) -> Callable[..., Any]:
        if any(kernel is done for done in self.wrapped.values()):
            return kernel  # already quantizing (the eager default handed back by the interface)
        cached = self.wrapped.get(id(kernel))
        if cached is not None:
            return cached

        def quantized_kernel(module: nn.Module, query, key, value, *args: Any, **kwargs: Any):
            self.kernel_calls += 1
            query = module.q_bmm_quantizer(query)
            key = module.k_bmm_quantizer(key)
            value = module.v_bmm_quantizer(value)
            if _enabled(module.p_bmm_quantizer):
                return self.run_with_quantized_p(kernel, module, query, key, value, args, kwargs)
            return kernel(module, query, key, value, *args, **kwargs)

        self.wrapped[id(kernel)] = quantized_kernel
        return quantized_kernel

    def run_with_quantized_p(self, kernel, module, query, key, value, args, kwargs):
        eager = self.eager
        name = f"{type(module).__name__}.p_bmm_quantizer"
        if eager is None:
            raise RuntimeError(
                f"{name} is enabled, but the module defining {original_class(module).__name__}"
                ".forward has no eager_attention_forward whose softmax qruntime can quantize; "
                "disable *p_bmm_quantizer"
            )
        if kernel is not eager:  # a fused kernel: its softmax is out of reach, run eager
            args, kwargs = _eager_arguments(module, query, key, args, kwargs)
        calls = [0]
        quantizer = module.p_bmm_quantizer

        def quantizing(softmax: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
            def softmax_then_quantize(*s_args: Any, **s_kwargs: Any) -> torch.Tensor:
                calls[0] += 1
                return quantizer(softmax(*s_args, **s_kwargs))

            return softmax_then_quantize

        result = rebind_globals(eager, _softmax_overrides(eager, quantizing))(
            module, query, key, value, *args, **kwargs
        )
        if calls[0] == 0:
            raise RuntimeError(
                f"{name} is enabled, but {eager.__module__}.eager_attention_forward computes "
                "its softmax in a way qruntime cannot intercept (not torch.softmax or "
                "nn.functional.softmax); disable *p_bmm_quantizer"
            )
        return result


def _softmax_overrides(
    eager: Callable[..., Any], quantizing: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> dict[str, Any]:
    """Globals of the eager kernel that lead to a softmax, bound to quantizing views."""
    functional = torch.nn.functional
    f_view = _Overlay(functional, {"softmax": quantizing(functional.softmax)})
    nn_view = _Overlay(torch.nn, {"functional": f_view})
    torch_view = _Overlay(torch, {"nn": nn_view, "softmax": quantizing(torch.softmax)})
    views = {id(torch): torch_view, id(torch.nn): nn_view, id(functional): f_view}
    overrides: dict[str, Any] = {}
    namespace = forward_globals(eager)
    for name in _innermost(eager).__code__.co_names:
        value = namespace.get(name)
        if value is None:
            continue
        if id(value) in views:
            overrides[name] = views[id(value)]
        elif value is functional.softmax or value is torch.softmax:
            overrides[name] = quantizing(value)
    return overrides


def _eager_arguments(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    """A fused kernel's arguments as the eager kernel needs them: its mask is boolean
    (True = attend) or absent with causality implied; eager adds a float mask to the scores."""
    kwargs = dict(kwargs)
    if args:
        mask, args = args[0], args[1:]
    else:
        mask = kwargs.pop("attention_mask", None)
    q_len, kv_len = query.shape[2], key.shape[2]
    if mask is None:
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", True) if causal is None else causal
        if causal and q_len > 1:
            rows = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
            mask = (rows >= torch.arange(kv_len, device=query.device)[None, :])[None, None]
    if mask is not None and mask.dim() != 4:  # e.g. flash attention's [B, S] padding mask
        raise RuntimeError(
            f"{type(module).__name__}.p_bmm_quantizer is enabled and needs the eager kernel, but "
            f"this kernel's attention mask has shape {tuple(mask.shape)}, not [B, H, S_q, S_kv]; "
            "use attn_implementation 'sdpa' or 'eager', or disable *p_bmm_quantizer"
        )
    if mask is not None and mask.dtype == torch.bool:
        additive = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
        mask = additive.masked_fill(~mask, torch.finfo(query.dtype).min)
    return (mask, *args), kwargs


class QuantAttention(QuantModule):
    """Hugging Face attention (a class whose module uses the attention-kernel interface) with
    ``q/k/v/p_bmm_quantizer`` on the kernel's operands and softmax output (module docstring)."""

    @classmethod
    def quantizer_slots(cls, module: nn.Module) -> list[QuantizerSlot]:
        return [QuantizerSlot(name, INT8_PER_TENSOR) for name in ATTENTION_QUANTIZERS]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        forward = original_class(self).forward
        namespace = forward_globals(forward)
        eager = namespace.get("eager_attention_forward")
        call = _Call(self, eager if callable(eager) else None)
        overrides: dict[str, Any] = {}
        if call.eager is not None:
            overrides["eager_attention_forward"] = call.wrap(call.eager)
        interface = namespace.get("ALL_ATTENTION_FUNCTIONS")
        if interface is not None:
            overrides["ALL_ATTENTION_FUNCTIONS"] = _KernelInterface(interface, call.wrap)
        enabled = [name for name in ATTENTION_QUANTIZERS if _enabled(self._modules[name])]
        try:
            patched = rebind_globals(forward, overrides)
        except TypeError as exc:
            if enabled:
                raise RuntimeError(
                    f"{type(self).__name__}: cannot intercept the attention kernel for the "
                    f"enabled {', '.join(enabled)} ({exc}); register a quant mixin for this "
                    "class (docs/huggingface.md)"
                ) from exc
            # every bmm quantizer is off: nothing to intercept, the model must still run
            return forward(self, *args, **kwargs)
        output = patched(self, *args, **kwargs)
        if call.kernel_calls == 0 and enabled:
            raise RuntimeError(
                f"{type(self).__name__}.forward never called an attention kernel through "
                f"{' or '.join(KERNEL_GLOBALS)}, so its enabled *_bmm_quantizers were not "
                "applied; register a quant mixin for this class (docs/huggingface.md)"
            )
        return output

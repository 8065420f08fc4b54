"""A compressed layer: the float weight Parameter replaced by its packed form.

Why a class swap (like conversion's ``Quant<C>``): the quant mixins read ``self.weight`` inside
the original ``forward``; a ``Compressed<Quant<C>>`` class whose ``weight`` property decodes the
packed weight keeps every forward (Linear, Conv, Embedding, GPT-2's Conv1D) unchanged and needs
no per-type code. The decoded weight is already quantized, so the weight quantizer is not called
again (it stays, with its amax, for save_state, summaries and export).

The packed tensors live in a :class:`PackedWeight` child named ``weight_compressed``, so they
follow ``model.to(device)`` and appear in ``state_dict`` as ``<layer>.weight_compressed.codes``,
``.scale`` (and ``.extra``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from qruntime.compress.codecs import Encoded, decode

__all__ = ["PACKED_NAME", "PackedWeight", "compressed_class", "is_compressed", "packed_weight"]

#: The child module of a compressed layer that holds its packed weight.
PACKED_NAME = "weight_compressed"

_GENERATED: dict[type[nn.Module], type[nn.Module]] = {}


class PackedWeight(nn.Module):
    """The buffers of an :class:`~qruntime.compress.codecs.Encoded` weight plus its layout."""

    def __init__(self, enc: Encoded) -> None:
        super().__init__()
        for name, tensor in enc.tensors().items():
            self.register_buffer(name, tensor)
        self.kind = enc.kind
        self.shape = tuple(enc.shape)
        self.dtype = enc.dtype
        self.num_bits = enc.num_bits
        self.block_sizes = dict(enc.block_sizes)
        self.block = enc.block

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        """Device moves only: ``model.to(dtype)``/``.half()`` would round the scales and turn
        E4M3 codes into wider floats, so a dtype change is undone (the tensor is moved to the
        device ``fn`` chose, in its own dtype); the decoded weight keeps the layer's dtype."""
        for key, value in self._buffers.items():
            if value is not None:
                moved = fn(value)
                self._buffers[key] = moved if moved.dtype == value.dtype else value.to(moved.device)
        return self

    def encoded(self) -> Encoded:
        """The packed weight with the buffers as they are now (after ``.to(device)``)."""
        return Encoded(
            self.kind,
            self.shape,
            self.dtype,
            self._buffers["codes"],  # type: ignore[arg-type]
            self._buffers["scale"],  # type: ignore[arg-type]
            self._buffers.get("extra"),
            self.num_bits,
            self.block_sizes,
            self.block,
        )

    def layout(self) -> dict[str, Any]:
        """What rebuilds this module from its buffers (saved in state-file metadata)."""
        return {
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": str(self.dtype).removeprefix("torch."),
            "num_bits": self.num_bits,
            "block_sizes": {str(k): v for k, v in self.block_sizes.items()},
            "block": self.block,
        }

    @classmethod
    def from_layout(cls, layout: dict[str, Any], tensors: dict[str, torch.Tensor]) -> PackedWeight:
        """Inverse of :meth:`layout` plus the buffers (a state file's)."""
        dtype = getattr(torch, str(layout["dtype"]))
        enc = Encoded(
            str(layout["kind"]),
            tuple(int(s) for s in layout["shape"]),
            dtype,
            tensors["codes"],
            tensors["scale"],
            tensors.get("extra"),
            int(layout["num_bits"]),
            {int(k): int(v) for k, v in dict(layout["block_sizes"]).items()},
            int(layout["block"]),
        )
        return cls(enc)

    def dequantize(self) -> torch.Tensor:
        return decode(self.encoded())

    def nbytes(self) -> int:
        return self.encoded().nbytes()

    def extra_repr(self) -> str:
        bits = f"int{self.num_bits}" if self.kind == "int" else self.kind
        return f"{bits}, shape={list(self.shape)}, {self.nbytes()} bytes"


class _CompressedWeight:
    """Mixin placed first: ``weight`` is the decoded packed weight, in and outside forward."""

    @property
    def weight(self) -> torch.Tensor:
        return self._modules[PACKED_NAME].dequantize()  # type: ignore[attr-defined]


def compressed_class(cls: type[nn.Module]) -> type[nn.Module]:
    """``Compressed<cls>`` (cls a converted ``Quant<C>``), made once per class. It keeps the
    original class record, so the layer still counts as converted from ``C``."""
    generated = _GENERATED.get(cls)
    if generated is None:
        generated = type(
            f"Compressed{cls.__name__}",
            (_CompressedWeight, cls),
            {
                "_qruntime_original": cls._qruntime_original,  # type: ignore[attr-defined]
                "__module__": cls.__module__,
            },
        )
        _GENERATED[cls] = generated
    return generated


def is_compressed(module: nn.Module) -> bool:
    """Whether ``module`` holds a packed weight instead of its float one."""
    return isinstance(module, _CompressedWeight)


def packed_weight(module: nn.Module) -> PackedWeight:
    """The packed weight of a compressed layer."""
    packed = module._modules.get(PACKED_NAME)
    if not is_compressed(module) or not isinstance(packed, PackedWeight):
        raise ValueError(f"{type(module).__name__} is not a compressed layer")
    return packed

"""Cache-sized chunked evaluation of elementwise fake-quant pipelines (CPU performance only).

A fake-quant formula is a handful of elementwise torch ops. Run over a whole 64 MB tensor, each op
streams the tensor through memory and every out-of-place op allocates (and page-faults) a fresh
buffer. Running the same ops on row chunks that stay in the CPU cache, writing each finished
chunk straight into the output, reads the input once and writes the output once. The arithmetic
is unchanged — every op is still a separate IEEE float32 operation on the same operands — so the
results are bit-identical to the unchunked formula (docs/numerics.md, 'Conventions').

Chunks are at most torch's parallel grain (32768 elements), so each op runs on the calling thread
without an OpenMP fork/join; parallelism comes from splitting the chunk list over a small thread
pool (``torch.get_num_threads()`` workers, at most ``MAX_WORKERS``; torch releases the GIL
inside ops). One join per call instead of one barrier per op per chunk keeps this fast on a busy
machine too.

Under ``torch.compile`` the formula runs in one pass over the whole tensor instead: the chunk
loop, its thread pool and ``torch.get_num_threads()`` are Python the compiler cannot trace (each
was a graph break), and the compiler fuses the elementwise ops itself, which is what the chunks
were for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

__all__ = ["CHUNK_ELEMENTS", "as_f32", "map_blocks", "map_chunks"]

#: Elements per chunk: torch's intra-op grain size, so an op on one chunk never forks threads;
#: 128 KiB of float32 stays in L2.
CHUNK_ELEMENTS = 1 << 15

#: At most this many chunk workers: each op's Python dispatch holds the GIL for a few
#: microseconds, so beyond a handful of threads they would mostly wait for each other.
MAX_WORKERS = 8

_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    # One pool per process (a forked child must not reuse its parent's dead threads).
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid() or _POOL[1]._max_workers < workers:
        _POOL = (os.getpid(), ThreadPoolExecutor(workers, thread_name_prefix="qruntime-fq"))
    return _POOL[1]


#: ``fn(x_chunk, buf, *param_chunks)``: write the float32 result of the chunk into ``buf``.
ChunkFn = Callable[..., None]


def as_f32(xc: torch.Tensor, buf: torch.Tensor) -> torch.Tensor:
    """The chunk as float32: itself when it already is (read-only), else upcast into ``buf``."""
    return xc if xc.dtype == torch.float32 else buf.copy_(xc)


def _layout(shape: torch.Size, params: Sequence[torch.Tensor]) -> tuple[int, int, str] | None:
    """``(rows, cols, mode)`` of a 2-D view of ``shape`` along which all params can be sliced.

    mode "scalar": every param has one element; "rows": params are ``(d0, 1, ..., 1)``;
    "cols": params are ``(1, ..., 1, d_last)``. None when no such view exists.
    """
    numel = math.prod(shape)
    if all(p.numel() == 1 for p in params):
        return numel, 1, "scalar"
    ndim = len(shape)
    pshapes = [tuple(p.shape) for p in params if p.numel() != 1]
    if any(len(s) != ndim for s in pshapes):
        return None
    if all(s[0] == shape[0] and all(d == 1 for d in s[1:]) for s in pshapes):
        return shape[0], numel // shape[0], "rows"
    if all(s[-1] == shape[-1] and all(d == 1 for d in s[:-1]) for s in pshapes):
        return numel // shape[-1], shape[-1], "cols"
    return None


def _run(
    fn: ChunkFn,
    x2: torch.Tensor,
    params: Sequence[torch.Tensor],
    row_params: bool,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """The chunk loop over a contiguous 2-D ``x2``; params are 0-d or sliced along rows."""
    rows, cols = x2.shape
    out = torch.empty(rows, cols, dtype=out_dtype, device=x2.device)
    if rows == 0 or cols == 0:
        return out
    step = max(1, CHUNK_ELEMENTS // cols)
    if not x2.is_cpu:
        step = rows  # one launch per op on accelerators
    starts = list(range(0, rows, step))
    direct = out_dtype == torch.float32

    def work(first: int, last: int) -> None:
        buf = None if direct else torch.empty(min(step, rows), cols, device=x2.device)
        with torch.no_grad():
            for r0 in starts[first:last]:
                r1 = min(rows, r0 + step)
                chunk_params = [p[r0:r1] if row_params and p.dim() else p for p in params]
                if direct:
                    fn(x2[r0:r1], out[r0:r1], *chunk_params)
                else:
                    assert buf is not None
                    b = buf[: r1 - r0]
                    fn(x2[r0:r1], b, *chunk_params)
                    out[r0:r1].copy_(b)

    workers = min(torch.get_num_threads(), MAX_WORKERS, len(starts))
    if workers <= 1 or not x2.is_cpu or step * cols > CHUNK_ELEMENTS:
        work(0, len(starts))
        return out
    bounds = [len(starts) * i // workers for i in range(workers + 1)]
    futures = [_pool(workers).submit(work, bounds[i], bounds[i + 1]) for i in range(1, workers)]
    work(bounds[0], bounds[1])
    for f in futures:
        f.result()
    return out


def _whole(
    fn: ChunkFn, x: torch.Tensor, params: Sequence[torch.Tensor], out_dtype: torch.dtype
) -> torch.Tensor:
    """``fn`` on all of ``x`` at once, params broadcast as given (the traced path)."""
    x = x.contiguous()
    buf = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    with torch.no_grad():
        fn(x, buf, *params)
    return buf if out_dtype == torch.float32 else buf.to(out_dtype)


def map_chunks(
    fn: ChunkFn, x: torch.Tensor, params: Sequence[torch.Tensor], out_dtype: torch.dtype
) -> torch.Tensor | None:
    """Evaluate an elementwise formula with broadcast params chunk by chunk (shape of ``x``).

    Returns None when the params' broadcast pattern has no row/column view (the caller then
    evaluates the formula unchunked). Under ``torch.compile`` one pass over the whole tensor
    (module docstring); params must then broadcast to ``x``'s shape without enlarging it.
    """
    if torch.compiler.is_compiling():
        return _whole(fn, x, params, out_dtype)
    layout = _layout(x.shape, params)
    if layout is None or x.numel() == 0:
        return None
    rows, cols, mode = layout
    if mode == "scalar":
        flat = [p.reshape(()) for p in params]
    elif mode == "rows":
        flat = [p.reshape(-1, 1) if p.numel() != 1 else p.reshape(()) for p in params]
    else:
        flat = [p.reshape(1, -1) if p.numel() != 1 else p.reshape(()) for p in params]
    x2 = x.contiguous().view(rows, cols)
    return _run(fn, x2, flat, mode == "rows", out_dtype).view(x.shape)


def map_blocks(
    fn: ChunkFn,
    x: torch.Tensor,
    block: int,
    params: Sequence[torch.Tensor],
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """Evaluate a per-block formula on the dynamic row-block layout, chunk by chunk.

    Rows of the last dim are cut into blocks of ``block`` elements, the partial last block of a
    row zero padded (padding is never written back); ``fn`` sees ``(blocks, block)`` chunks and
    must only mix values within a row of its chunk. ``params`` must be 0-d.
    """
    n = x.shape[-1] if x.dim() else 1
    pad = (-n) % block
    if torch.compiler.is_compiling():
        rows = F.pad(x.reshape(-1, n), (0, pad)) if pad else x.reshape(-1, n)
        out = _whole(fn, rows.reshape(-1, block), params, out_dtype)
        return out.view(rows.shape)[:, :n].reshape(x.shape)
    if pad == 0:
        return _run(fn, x.contiguous().view(-1, block), params, False, out_dtype).view(x.shape)
    rows = F.pad(x.reshape(-1, n), (0, pad))
    out = _run(fn, rows.view(-1, block), params, False, out_dtype)
    return out.view(rows.shape)[:, :n].reshape(x.shape)

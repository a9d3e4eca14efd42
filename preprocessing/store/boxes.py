"""Reading a box (a training patch) out of a stored array: chunk by chunk, with the padding and the dtype cast fused
into one copy.

zarr's own slicing decodes every chunk the box touches into a temporary array, then the sampler padded it into a
second one and numpy cast float16 → float32 into a third (numpy's half cast is scalar: it was half the read time in
benchmarks/store.py). Here each touched chunk is fetched (files read directly for local stores, one batched `get`
for object stores), decoded into a reused per-thread buffer, and only its part of the box is copied into the output
by torch, which casts half → float with SIMD as it copies; zeros fill what lies outside the array or in chunks that
were never written (zarr skips all-fill chunks). Only the wanted channels are copied. Arrays this fast path does not
know (sharded, other codecs or chunk grids, big-endian bytes) are read through zarr, with the same result.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["read_box", "fast_path"]

_local = threading.local()


def _stage(nbytes: int) -> np.ndarray:
    """This thread's reusable decode buffer (a chunk is decoded, copied out and forgotten before the next)."""
    buf = getattr(_local, "buf", None)
    if buf is None or buf.size < nbytes:
        buf = np.empty(nbytes, np.uint8)
        _local.buf = buf
    return buf[:nbytes]


def fast_path(arr: Any) -> str | None:
    """'raw' or 'blosc' when `arr` is a zarr v3 array with a regular chunk grid and bytes (+ blosc) codecs in
    native byte order; None when it must be read through zarr."""
    meta = getattr(arr, "metadata", None)
    if getattr(meta, "zarr_format", None) != 3 or not hasattr(meta, "encode_chunk_key"):
        return None
    if type(meta.chunk_grid).__name__ != "RegularChunkGrid":
        return None
    codecs = [c.to_dict() for c in meta.codecs]
    names = [c["name"] for c in codecs]
    if names not in (["bytes"], ["bytes", "blosc"]):
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian")
    if endian not in (None, sys.byteorder):
        return None
    return "blosc" if len(names) == 2 else "raw"


def _fetch(arr: Any, keys: list[str]) -> list[bytes | None]:
    """Encoded chunks (None = never written): files read directly from a local store, else one batched `get`."""
    store, prefix = arr.store_path.store, arr.store_path.path
    full = [f"{prefix}/{k}" if prefix else k for k in keys]
    root = getattr(store, "root", None)
    if type(store).__name__ == "LocalStore" and root is not None:
        out: list[bytes | None] = []
        for key in full:
            try:
                out.append((Path(root) / key).read_bytes())
            except FileNotFoundError:
                out.append(None)
        return out
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    async def get_all() -> list[Any]:
        proto = default_buffer_prototype()
        return list(await asyncio.gather(*(store.get(k, prototype=proto) for k in full)))

    return [None if b is None else b.to_bytes() for b in sync(get_all())]


def _bounds(start: Sequence[int], box: Sequence[int], shape: Sequence[int]) -> list[tuple[int, int]]:
    """[a, b) of the box inside the array per axis (b == a when the box misses the array on that axis)."""
    return [(min(max(s, 0), n), max(min(max(s, 0), n), min(s + p, n))) for s, p, n in zip(start, box, shape)]


def read_box(arr: Any, start: Sequence[int], box: Sequence[int], *, lead: int = 0, dtype: Any = np.float32,
             channels: Sequence[int] | None = None) -> np.ndarray:
    """arr[..., start : start + box] as `dtype`, zero-padded where the box leaves the array.

    `lead` leading axes (channels) are read whole, or only `channels` (indices along the first leading axis, in
    that order) when given; `start` may be negative or run past the end.
    """
    if channels is not None and lead != 1:
        raise ValueError("channels select along one leading axis (lead=1)")
    shape = tuple(int(s) for s in arr.shape)
    head = list(shape[:lead])
    if channels is not None:
        head[0] = len(channels)
    bounds = _bounds(start, box, shape[lead:])
    inside = all(b - a == p for (a, b), p in zip(bounds, box))
    out = (np.empty if inside else np.zeros)((*head, *box), dtype=dtype)
    if any(b == a for a, b in bounds):
        return out
    dst_box = tuple(slice(a - s, b - s) for (a, b), s in zip(bounds, start))
    kind = fast_path(arr)
    if kind is None:
        src = tuple(slice(a, b) for a, b in bounds)
        part = np.asarray(arr[(slice(None),) * lead + src])
        if channels is not None:
            part = part[list(channels)]
        torch.from_numpy(out)[(Ellipsis, *dst_box)].copy_(torch.from_numpy(np.ascontiguousarray(part)))
        return out
    _read_chunks(arr, kind, out, start, bounds, lead, channels, zeroed=not inside)
    return out


def _read_chunks(arr: Any, kind: str, out: np.ndarray, start: Sequence[int], bounds: list[tuple[int, int]],
                 lead: int, channels: Sequence[int] | None, zeroed: bool) -> None:
    meta = arr.metadata
    chunk = tuple(int(c) for c in meta.chunk_grid.chunk_shape)
    full = [(0, n) for n in arr.shape[:lead]] + bounds
    ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(full, chunk)]
    coords = list(itertools.product(*ranges))
    raws = _fetch(arr, [meta.encode_chunk_key(c) for c in coords])
    dtype = np.dtype(arr.dtype)
    nbytes = int(np.prod(chunk)) * dtype.itemsize
    target = torch.from_numpy(out)
    origin = [0] * lead + list(start)
    for coord, raw in zip(coords, raws):
        if raw is None:  # never written: all fill value
            fill = 0 if meta.fill_value is None else meta.fill_value
            if zeroed and float(fill) == 0:
                continue
            view = np.full(chunk, fill, dtype)
        else:
            buf = _stage(nbytes)
            if kind == "blosc":
                from numcodecs import blosc

                blosc.decompress(raw, buf)
            else:
                buf[:] = np.frombuffer(raw, np.uint8)
            view = buf.view(dtype).reshape(chunk)
        src, dst = [], []
        for ax, (i, c) in enumerate(zip(coord, chunk)):
            lo, hi = max(full[ax][0], i * c), min(full[ax][1], (i + 1) * c)
            src.append(slice(lo - i * c, hi - i * c))
            dst.append(slice(lo - origin[ax], hi - origin[ax]) if ax >= lead else slice(lo, hi))
        piece = torch.from_numpy(view)[tuple(src)]
        if channels is None:
            target[tuple(dst)].copy_(piece)
            continue
        c0 = coord[0] * chunk[0]
        for j, ch in enumerate(channels):
            if c0 <= ch < c0 + chunk[0]:
                target[(j, *dst[1:])].copy_(piece[ch - c0])

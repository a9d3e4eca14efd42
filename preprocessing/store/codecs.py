"""Chunk codecs and chunk shapes for stored images (chosen by benchmarks/store.py, see results/store.json)."""

from __future__ import annotations

from typing import Sequence

SHUFFLE = {"float16": "shuffle", "float32": "shuffle", "uint8": "bitshuffle"}


def compressors(name: str, level: int, dtype: str) -> list:
    """zarr v3 compressor list: blosc-lz4 / blosc-zstd with byte shuffle, or none."""
    from zarr.codecs import BloscCodec

    if name == "none":
        return []
    if name not in ("lz4", "zstd"):
        raise ValueError(f"codec {name!r} is not one of lz4, zstd, none")
    return [BloscCodec(cname=name, clevel=level, shuffle=SHUFFLE.get(dtype, "shuffle"), typesize=_size(dtype))]


def _size(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def image_chunks(shape: Sequence[int], chunk: Sequence[int]) -> tuple[int, ...]:
    """(C, cz, cy, cx): all channels in one chunk, spatial chunk clipped to the array (2-value chunks = in-plane)."""
    c, *spatial = shape
    if len(chunk) == 2:  # 2D seeds: one slice deep, (cy, cx) in plane
        chunk = [1, *chunk]
    return (int(c), *(max(1, min(int(k), int(s))) for k, s in zip(chunk, spatial)))

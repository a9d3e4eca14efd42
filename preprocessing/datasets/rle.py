"""Run-length encoding of the UW-Madison GI tract competition (`train.csv` `segmentation` column).

Format: space-separated `start length` pairs, starts 1-based, over the slice flattened in **row-major** (C) order of
the PNG array (height, width) — the encoding of the competition's own train.csv, as every public decoder confirms
(`img.reshape(height, width)` after filling the flat buffer). The issue text called it column-major; that is the
Kaggle "Carvana"/"Airbus" convention, not this dataset's. `order="column"` decodes the Fortran-order variant.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

RleOrder = Literal["row", "column"]
ORDERS: tuple[str, ...] = ("row", "column")


def _numpy_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"RLE order {order!r} is not one of {list(ORDERS)}")
    return "C" if order == "row" else "F"


def rle_decode(rle: str, shape: tuple[int, int], order: RleOrder = "row") -> np.ndarray:
    """Decode `rle` into a bool mask of `shape` (height, width); ValueError for malformed runs or runs past the image."""
    np_order = _numpy_order(order)
    size = int(shape[0]) * int(shape[1])
    tokens = rle.split() if isinstance(rle, str) else []
    if len(tokens) % 2:
        raise ValueError(f"RLE has an odd number of values ({len(tokens)}): it must be `start length` pairs")
    try:
        runs = np.asarray(tokens, dtype=np.int64).reshape(-1, 2)
    except ValueError:
        raise ValueError(f"RLE holds a value that is not an integer: {rle[:60]!r}") from None
    starts, lengths = runs[:, 0] - 1, runs[:, 1]
    if (starts < 0).any() or (lengths < 1).any():
        raise ValueError("RLE starts must be >= 1 (1-based) and lengths >= 1")
    ends = starts + lengths
    if len(ends) and ends.max() > size:
        bad = int(np.argmax(ends > size))
        raise ValueError(f"RLE run {bad + 1} (start {starts[bad] + 1}, length {lengths[bad]}) ends at pixel {ends[bad]}, "
                         f"past the {shape[0]}x{shape[1]} image ({size} pixels)")
    flat = np.zeros(size + 1, dtype=np.int32)
    np.add.at(flat, starts, 1)
    np.add.at(flat, ends, -1)
    return (np.cumsum(flat[:-1]) > 0).reshape(tuple(shape), order=np_order)


def rle_encode(mask: np.ndarray, order: RleOrder = "row") -> str:
    """Encode a 2D mask (nonzero = inside) as `start length` pairs, 1-based; an empty mask gives ''."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode needs a 2D mask, got shape {mask.shape}")
    flat = np.asarray(mask).ravel(order=_numpy_order(order)) != 0
    padded = np.concatenate([[False], flat, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # run starts (0-based) and ends, alternating
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))

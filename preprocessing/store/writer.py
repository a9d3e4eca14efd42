"""Writing a store: the root group with dataset attrs, and one case (image, label, fg index, attrs) at a time.

A case's arrays are (re)written in place under `cases/<id>`; the case only becomes visible when its row is
committed (see manifest.py), so the write itself need not be atomic.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from voxray.preprocessing.store.codecs import compressors, image_chunks
from voxray.preprocessing.store.fs import zarr_store

STORE_VERSION = 1


@dataclass(frozen=True)
class WriteOptions:
    """How arrays are laid out on disk (from the `preprocess` spec)."""

    image_dtype: str = "float16"
    chunk: tuple[int, ...] = (64, 64, 64)
    codec: str = "lz4"
    level: int = 1
    fg_samples_per_class: int = 10_000
    label_encoding: str = "index"


def open_root(uri: str, mode: str = "a"):
    import zarr

    return zarr.open_group(store=zarr_store(uri, read_only=mode == "r"), mode=mode, zarr_format=3)


def create_store(uri: str, attrs: dict) -> None:
    """Create (or reopen) the root group and set its dataset attrs; existing cases are kept."""
    root = open_root(uri, "a")
    root.attrs.update({"voxray_store": STORE_VERSION, **attrs})
    root.require_group("cases")
    root.require_group("fg")


def array_sha256(arr: np.ndarray) -> str:
    """Checksum of an array's values as stored (C order bytes + dtype + shape); `store verify` recomputes it."""
    h = hashlib.sha256(f"{arr.dtype.str}{tuple(arr.shape)}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def case_seed(case_id: str, seed: int = 0) -> int:
    """Stable per-case seed (Python's hash() is salted per process)."""
    return (zlib.crc32(case_id.encode()) ^ seed) & 0x7FFFFFFF


def fg_coordinates(label: np.ndarray, encoding: str, n: int, seed: int) -> np.ndarray:
    """(N, 4) int32 rows (class, z, y, x): at most `n` voxels per class, subsampled with a seeded generator.

    index encoding: a class is a label value > 0; bitmask: class k is bit k-1.
    """
    rng = np.random.default_rng(seed)
    if encoding == "bitmask":
        classes = [(k + 1, (label & np.uint8(1 << k)) != 0) for k in range(8)]
    elif encoding == "index":
        classes = [(int(v), label == v) for v in np.unique(label) if v > 0]
    else:
        raise ValueError(f"label_encoding {encoding!r} is not one of index, bitmask")
    parts = []
    for cls, mask in classes:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            continue
        if idx.size > n:
            idx = np.sort(rng.choice(idx, n, replace=False))
        zyx = np.stack(np.unravel_index(idx, label.shape), axis=1)
        parts.append(np.concatenate([np.full((len(idx), 1), cls), zyx], axis=1))
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros((0, 4), np.int32)


def _array(group, name: str, data: np.ndarray, chunks: Sequence[int], opts: WriteOptions):
    arr = group.create_array(name, shape=data.shape, dtype=data.dtype, chunks=tuple(chunks),
                             compressors=compressors(opts.codec, opts.level, str(data.dtype)), overwrite=True)
    arr[...] = data
    return arr


def write_case(uri: str, case_id: str, image: np.ndarray, label: np.ndarray | None, record: dict,
               opts: WriteOptions, extra_attrs: dict | None = None) -> dict:
    """Write one preprocessed case; returns the row fields describing what was written (checksums, shape)."""
    root = open_root(uri, "a")
    image = np.ascontiguousarray(image, dtype=opts.image_dtype)
    group = root.require_group("cases").create_group(case_id, overwrite=True)
    chunks = image_chunks(image.shape, opts.chunk)
    _array(group, "image", image, chunks, opts)
    out = {"image_sha256": array_sha256(image), "label_sha256": None, "has_label": label is not None,
           "shape": [int(s) for s in image.shape[1:]], "channels": int(image.shape[0])}
    fg = np.zeros((0, 4), np.int32)
    if label is not None:
        label = np.ascontiguousarray(label, dtype=np.uint8)
        _array(group, "label", label, chunks[1:], opts)
        out["label_sha256"] = array_sha256(label)
        fg = fg_coordinates(label, opts.label_encoding, opts.fg_samples_per_class, case_seed(case_id))
    fg_group = root.require_group("fg")
    arr = fg_group.create_array(case_id, shape=fg.shape, dtype=np.int32, chunks=(max(1, len(fg)), 4),
                                compressors=compressors("zstd", 1, "int32"), overwrite=True)
    if len(fg):
        arr[...] = fg
    group.attrs.update({"record": record, "spacing": record["spacing"], "shape": out["shape"],
                        "has_label": out["has_label"], "image_sha256": out["image_sha256"],
                        "label_sha256": out["label_sha256"], **(extra_attrs or {})})
    return out

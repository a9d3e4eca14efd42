"""Dataset fingerprint (nnU-Net style): spacings, shapes and foreground intensity statistics per channel."""

from __future__ import annotations

from typing import Iterable

import numpy as np

PERCENTILES = (0.5, 50.0, 99.5)


def intensity_samples(image: np.ndarray, mask: np.ndarray, n: int, seed: int) -> list[list[float]]:
    """Up to `n` raw intensities per channel from voxels in `mask` (foreground, or nonzero when unlabelled)."""
    idx = np.flatnonzero(mask)
    if idx.size > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    flat = image.reshape(image.shape[0], -1)
    return [[float(v) for v in flat[c, idx]] for c in range(image.shape[0])]


def _channel_stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"n": 0}
    p = np.percentile(values, PERCENTILES)
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max()),
            "percentile_00_5": float(p[0]), "median": float(p[1]), "percentile_99_5": float(p[2])}


def fingerprint(rows: Iterable[dict], channels: list[str], spec_hash: str) -> dict:
    """Aggregate ok rows into the dataset fingerprint written as fingerprint.json."""
    rows = [r for r in rows if r.get("status") == "ok"]
    spacings = np.array([r["original_spacing"] for r in rows], dtype=float).reshape(-1, 3)
    shapes = np.array([r["shape"] for r in rows], dtype=float).reshape(-1, 3)
    per_channel = {}
    for c, name in enumerate(channels):
        vals = [np.asarray(r["intensity"][c], dtype=np.float64) for r in rows if r.get("intensity")]
        per_channel[name] = _channel_stats(np.concatenate(vals) if vals else np.empty(0))
    return {
        "cases": len(rows),
        "spec_hash": spec_hash,
        "channels": channels,
        "spacings": {"median": _median(spacings), "min": _reduce(spacings, np.min), "max": _reduce(spacings, np.max)},
        "shapes_after_preprocessing": {"median": _median(shapes), "min": _reduce(shapes, np.min),
                                       "max": _reduce(shapes, np.max)},
        "intensity_foreground": per_channel,
        "source_dtypes": sorted({d for r in rows for d in (r.get("source_dtypes") or ())}) or None,
        "per_case": {r["case_id"]: {"original_spacing": r["original_spacing"], "shape": r["shape"],
                                     "original_shape": r["original_shape"]} for r in rows},
    }


def _median(a: np.ndarray) -> list[float] | None:
    return [float(v) for v in np.median(a, axis=0)] if len(a) else None


def _reduce(a: np.ndarray, fn) -> list[float] | None:
    return [float(v) for v in fn(a, axis=0)] if len(a) else None

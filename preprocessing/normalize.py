"""Per-channel intensity normalisation schemes (nnU-Net's defaults for MRI and CT); stats go into the record."""

from __future__ import annotations

import numpy as np

NORMALIZERS = ("zscore_nonzero", "zscore", "ct_clip", "ct_zscore", "none")
_EPS = 1e-8


def _zscore(x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, dict]:
    vals = x[mask] if mask is not None else x
    if vals.size == 0:
        return np.zeros_like(x), {"mean": 0.0, "std": 1.0}
    mean, std = float(vals.mean(dtype=np.float64)), float(vals.std(dtype=np.float64))
    out = (x - mean) / max(std, _EPS)
    if mask is not None:
        out[~mask] = 0.0  # background stays exactly 0 so crops and padding agree
    return out.astype(np.float32, copy=False), {"mean": mean, "std": std}


def normalize_channels(image: np.ndarray, scheme: str, clip: tuple[float, float] | None = None,
                       ct_stats: tuple[float, float] | None = None) -> tuple[np.ndarray, dict]:
    """Normalise (C, ...) per channel; returns a new float32 array and {"scheme", "stats": [per channel]}.

    ct_zscore is nnU-Net's CT normalisation: clip to the dataset's foreground window, then subtract the dataset's
    foreground mean and divide by its std (`ct_stats`), the same numbers for every case (Hounsfield units are
    absolute, so per-case statistics would throw information away)."""
    if scheme not in NORMALIZERS:
        raise ValueError(f"normalize {scheme!r} is not one of {list(NORMALIZERS)}")
    out = np.empty(image.shape, dtype=np.float32)
    stats = []
    for c in range(image.shape[0]):
        x = image[c].astype(np.float32, copy=False)
        if scheme == "zscore_nonzero":
            out[c], s = _zscore(x, x != 0)
        elif scheme == "zscore":
            out[c], s = _zscore(x, None)
        elif scheme == "ct_clip":
            if clip is None:
                raise ValueError("normalize 'ct_clip' needs clip=(low, high)")
            lo, hi = float(clip[0]), float(clip[1])
            out[c] = (np.clip(x, lo, hi) - lo) / (hi - lo)
            s = {"low": lo, "high": hi}
        elif scheme == "ct_zscore":
            if clip is None or ct_stats is None:
                raise ValueError("normalize 'ct_zscore' needs clip=(low, high) and ct_stats=(mean, std)")
            lo, hi, mean, std = float(clip[0]), float(clip[1]), float(ct_stats[0]), float(ct_stats[1])
            out[c] = (np.clip(x, lo, hi) - mean) / max(std, _EPS)
            s = {"low": lo, "high": hi, "mean": mean, "std": std}
        else:
            out[c] = x
            s = {}
        stats.append(s)
    return out, {"scheme": scheme, "stats": stats}

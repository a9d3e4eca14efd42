"""What input QA compares requests with, computed at export and stored in the model card.

- `fingerprint:` the training cases' spacing and field-of-view range, orientations and on-disk voxel types (from
  each case's transform record and the store's fingerprint.json), and per-channel intensity quantile profiles over
  the body. fingerprint.json's intensities are of the labelled foreground, which a request (no label) cannot be
  compared with, so the profiles are taken here from the stored images with each case's normalisation undone:
  the intensities a request sends.
- `uncertainty_reference:` the per-case uncertainty score of every validation case, predicted exactly as a request
  is (the card's settings and postprocessing), so a request's score gets its percentile among them.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from voxray.training.qa import QUANTILES, body_mask, channel_profiles

log = logging.getLogger(__name__)

__all__ = ["FINGERPRINT_VERSION", "MAX_CASES", "training_fingerprint", "validation_reference", "denormalize"]

FINGERPRINT_VERSION = 1
MAX_CASES = 50
"""Training cases read for intensity profiles and validation cases predicted (evenly spaced when more): bounds
the export's cost on large datasets; geometry covers every case (attributes only)."""


def denormalize(image: np.ndarray, normalization: Mapping[str, Any] | None) -> np.ndarray:
    """Stored (C, *S) image → the intensities before normalisation (`normalize.normalize_channels`' record);
    voxels outside the body stay 0. Clipped schemes give the clipped intensities back."""
    out = np.asarray(image, dtype=np.float32).copy()
    norm = normalization or {}
    scheme, stats = norm.get("scheme", "none"), norm.get("stats") or []
    body = body_mask(out) if scheme == "zscore_nonzero" else None
    for c, s in enumerate(stats[: out.shape[0]]):
        if scheme in ("zscore", "zscore_nonzero", "ct_zscore"):
            out[c] = out[c] * float(s["std"]) + float(s["mean"])
        elif scheme == "ct_clip":
            out[c] = out[c] * (float(s["high"]) - float(s["low"])) + float(s["low"])
    if body is not None:
        out[:, ~body] = 0.0
    return out


def _spread(cases: Sequence[int], limit: int) -> list[int]:
    if len(cases) <= limit:
        return list(cases)
    return [cases[int(i)] for i in np.linspace(0, len(cases) - 1, limit).round()]


def _range(values: list[list[float]]) -> dict[str, list[float]] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"min": a.min(0).round(4).tolist(), "max": a.max(0).round(4).tolist(),
            "median": np.median(a, 0).round(4).tolist()}


def training_fingerprint(store: Any, case_ids: Sequence[str], channels: Sequence[int] | None,
                         names: Sequence[str]) -> dict[str, Any]:
    """The card's `fingerprint:` block over the training `case_ids` (`channels`: store channel indices of the
    model's `names`, None = all)."""
    from voxray.training.qa import geometry

    spacings, fovs, orientations, records = [], [], set(), {}
    for cid in case_ids:
        record = (store.case_attrs(cid) or {}).get("record")
        if not record:
            continue
        geo = geometry(record)
        spacings.append(geo["spacing"])
        fovs.append(geo["fov"])
        if geo["orientation"]:
            orientations.add(geo["orientation"])
        records[cid] = record
    profiles = []
    for i, cid in enumerate(_spread(list(case_ids), MAX_CASES)):
        raw = denormalize(np.asarray(store.image(cid)[...]), (records.get(cid) or {}).get("normalization"))
        profile = channel_profiles(raw if channels is None else raw[list(channels)], seed=i)
        if profile is not None:
            profiles.append(profile)
    intensity = {}
    if profiles:
        stack = np.stack(profiles)  # cases × C × Q
        for c, name in enumerate(names):
            p = stack[:, c]
            spread = np.median(p[:, -2] - p[:, 1])  # 97.5 − 2.5 %: the channel's typical range
            intensity[name] = {"median": np.median(p, 0).round(5).tolist(), "low": p.min(0).round(5).tolist(),
                               "high": p.max(0).round(5).tolist(), "scale": round(float(max(spread, 1e-6)), 5)}
    try:
        dtypes = (store.fingerprint() or {}).get("source_dtypes")
    except Exception:  # an older store (or a test stand-in) without fingerprint.json / the field
        dtypes = None
    return {"version": FINGERPRINT_VERSION, "cases": len(records), "intensity_cases": len(profiles),
            "spacing": _range(spacings), "fov": _range(fovs), "orientations": sorted(orientations) or None,
            "dtypes": dtypes, "quantiles": list(QUANTILES), "intensity": intensity or None}


def validation_reference(predictor: Any, store: Any, val_ids: Sequence[str],
                         channels: Sequence[int] | None) -> dict[str, Any] | None:
    """The card's `uncertainty_reference:` block: sorted per-case scores of the validation cases (their stored,
    already preprocessed images through `predictor.run`, so TTA, restriction and postprocessing match requests)."""
    import torch

    from voxray.training.predict import Request

    scores = []
    for cid in _spread(list(val_ids), MAX_CASES):
        image = np.asarray(store.image(cid)[...], dtype=np.float32)
        image = torch.from_numpy(np.ascontiguousarray(image if channels is None else image[list(channels)]))
        inferred = predictor.run([Request(image)])[0]
        scores.append(predictor.score(inferred, image)[1]["score"])
    if not scores:
        return None
    log.info("uncertainty on %d validation case(s): median score %.4f", len(scores), float(np.median(scores)))
    return {"cases": len(scores), "tta_members": predictor.settings.tta_members,
            "scores": sorted(round(float(s), 6) for s in scores)}

"""Input QA: one request's image compared with the training fingerprint in the model card (pure numpy).

A model trained on 1 mm brain MRI in FLAIR, T1, T1gd, T2 order gives confident nonsense for a 5 mm scan or swapped
modalities, and nothing in the mask says so. Each request is checked against the card's `fingerprint:` block
(`qa_reference.training_fingerprint`, written at export) before inference:

- `spacing` / `fov`: voxel spacing or physical extent on some RAS axis far outside the training range (more than
  `SPACING_FACTOR` / `FOV_FACTOR` times beyond it);
- `orientation`: axis codes the training data never had (info only: reorientation to RAS is exact, but a wrong
  header is how real scans end up flipped);
- `intensity`: a channel's intensity quantile profile over the nonzero (body) voxels outside the envelope of the
  training cases' profiles, on average by more than `INTENSITY_LIMIT` of the channel's typical spread;
- `channel_order`: the channels match another channel's profile clearly better than their own (channels swapped);
- `dtype`: an on-disk voxel type the training images never had (warn for 8-bit/bool, which lose intensities).

The result is a report `{"status": "ok"|"warn", "policy", "findings": [{code, channel, severity, message}]}`;
`info` findings never change the status. The policy (`warn`, `refuse`, `off`) decides what a `warn` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from voxray.training.predict_io import InvalidInput

__all__ = ["QUANTILES", "POLICIES", "QARefused", "Finding", "channel_profiles", "check_input", "header_value",
           "score_percentile", "enforce", "describe"]

QUANTILES = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0)
"""Percentiles (of the body voxels) that make one channel's intensity profile."""
POLICIES = ("warn", "refuse", "off")
SAMPLE = 20000
"""Body voxels sampled per image for the profile (fixed seed: the same input gives the same report)."""
SPACING_FACTOR = 1.5
"""A spacing more than 1.5× above the largest (or below the smallest) training spacing on an axis is flagged."""
FOV_FACTOR = 2.0
"""An extent more than 2× beyond the training range on an axis is flagged (scans are cropped differently)."""
INTENSITY_LIMIT = 0.25
"""Mean distance of a channel's quantiles outside the training envelope, in units of the channel's spread."""
ORDER_MARGIN = 1.5
"""Channels are reported swapped when, over the channels the best reassignment moves, their distance in the given
order is over 1.5× the reassigned one ..."""
ORDER_MIN = 0.05
"""... and larger than it by at least this (in spread units), so near-identical channels never trip it."""
_LOSSY = ("uint8", "int8", "bool")


class QARefused(InvalidInput):
    """An input refused by the `refuse` QA policy; `report` holds the findings (HTTP 422 returns them)."""

    def __init__(self, message: str, report: Mapping[str, Any]) -> None:
        super().__init__(message, hint="check the findings; `--qa warn` (or serve `qa: warn`) predicts anyway")
        self.report = dict(report)


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    message: str
    channel: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "channel": self.channel, "severity": self.severity, "message": self.message}


def body_mask(image: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """Voxels nonzero in any channel of (C, *S): the region crop and `zscore_nonzero` call the body."""
    return np.any(np.abs(image) > tol, axis=0)


def channel_profiles(image: np.ndarray, mask: np.ndarray | None = None, n: int = SAMPLE,
                     seed: int = 0) -> np.ndarray | None:
    """(C, len(QUANTILES)) intensity quantiles of (C, *S) over `mask` (default: the body), from at most `n`
    voxels; None when the mask is empty."""
    mask = body_mask(image) if mask is None else mask
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return None
    if idx.size > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    values = image.reshape(image.shape[0], -1)[:, idx].astype(np.float64)
    return np.percentile(values, QUANTILES, axis=1).T


def geometry(record: Mapping[str, Any]) -> dict[str, Any]:
    """Spacing and field of view (mm, RAS (Z, Y, X) order) and axis codes of a transform record."""
    spacing = [float(s) for s in record["original_spacing"]]
    shape = record.get("ras_shape_zyx") or record["original_shape"]
    return {"spacing": spacing, "fov": [round(s * n, 3) for s, n in zip(spacing, shape)],
            "orientation": record.get("orientation")}


def check_input(image: np.ndarray, record: Mapping[str, Any], fingerprint: Mapping[str, Any] | None,
                channels: Sequence[str], dtypes: Sequence[str] = (), policy: str = "warn") -> dict[str, Any]:
    """The QA report of one input: `image` (C, *S) raw intensities in the card's channel order, `record` its
    transform record (geometry), `dtypes` its files' on-disk voxel types; `fingerprint` the card's block (None:
    the model predates QA, nothing to compare with)."""
    if policy not in POLICIES:
        raise ValueError(f"qa policy {policy!r} must be one of {', '.join(POLICIES)}")
    if not fingerprint:
        return {"status": "ok", "policy": policy, "checked": False, "findings": [],
                "note": "the model card has no training fingerprint (exported before input QA)"}
    findings = _geometry_findings(geometry(record), fingerprint)
    findings += _dtype_findings(dtypes, fingerprint.get("dtypes"))
    ref = fingerprint.get("intensity") or {}
    if ref and all(c in ref for c in channels):
        profile = channel_profiles(np.asarray(image))
        if profile is not None:
            findings += _intensity_findings(profile, [ref[c] for c in channels], list(channels))
    status = "warn" if any(f.severity == "warn" for f in findings) else "ok"
    return {"status": status, "policy": policy, "checked": True, "findings": [f.as_dict() for f in findings]}


def _axes(values: Sequence[float]) -> str:
    return "×".join(f"{v:g}" for v in values)


def _outside(value: float, low: float, high: float, factor: float) -> bool:
    return value > high * factor or value < low / factor


def _geometry_findings(geo: Mapping[str, Any], fp: Mapping[str, Any]) -> list[Finding]:
    out = []
    names = ("Z (S-I)", "Y (A-P)", "X (R-L)")
    for key, factor, what in (("spacing", SPACING_FACTOR, "spacing"), ("fov", FOV_FACTOR, "field of view")):
        rng = fp.get(key) or {}
        if not rng.get("min") or not rng.get("max"):
            continue
        bad = [i for i, v in enumerate(geo[key]) if _outside(v, rng["min"][i], rng["max"][i], factor)]
        if bad:
            axes = ", ".join(f"{names[i]} {geo[key][i]:g} mm" for i in bad)
            out.append(Finding(key, "warn", f"{what} {axes} is far outside the training range "
                                            f"{_axes(rng['min'])} – {_axes(rng['max'])} mm (Z×Y×X)"))
    seen = fp.get("orientations") or []
    if seen and geo.get("orientation") and geo["orientation"] not in seen:
        out.append(Finding("orientation", "info", f"orientation {geo['orientation']} differs from the training "
                                                  f"data's {', '.join(seen)} (reoriented by the affine; check the "
                                                  "header if the mask looks flipped)"))
    return out


def _dtype_findings(dtypes: Sequence[str], seen: Sequence[str] | None) -> list[Finding]:
    if not seen or not dtypes:
        return []
    out = []
    for d in sorted(set(dtypes) - set(seen)):
        lossy = d in _LOSSY and not set(seen) & set(_LOSSY)
        out.append(Finding("dtype", "warn" if lossy else "info",
                           f"voxel type {d} was not among the training images' ({', '.join(seen)})"
                           + ("; 8-bit data has lost most intensity levels" if lossy else "")))
    return out


def _distance(profile: np.ndarray, ref: Mapping[str, Any]) -> float:
    """Mean |quantile − the training cases' median quantile| in units of the channel's spread (a 1-Wasserstein
    distance between quantile functions, scaled)."""
    return float(np.mean(np.abs(profile - np.asarray(ref["median"]))) / max(float(ref["scale"]), 1e-6))


def _excess(profile: np.ndarray, ref: Mapping[str, Any]) -> float:
    """Mean distance of the quantiles outside the training cases' [low, high] envelope, in spread units."""
    low, high = np.asarray(ref["low"]), np.asarray(ref["high"])
    out = np.maximum(0.0, np.maximum(low - profile, profile - high))
    return float(out.mean() / max(float(ref["scale"]), 1e-6))


def _intensity_findings(profile: np.ndarray, refs: list[Mapping[str, Any]], channels: list[str]) -> list[Finding]:
    out = []
    if len(channels) > 1:
        from scipy.optimize import linear_sum_assignment

        cost = np.array([[_distance(profile[i], refs[j]) for j in range(len(refs))] for i in range(len(channels))])
        rows, cols = linear_sum_assignment(cost)
        moved = rows[cols != rows]
        own, best = float(cost[moved, moved].sum()), float(cost[moved, cols[moved]].sum())
        if moved.size and own > ORDER_MARGIN * best and own - best > ORDER_MIN:
            moved = ", ".join(f"{channels[i]!r} looks like {channels[j]!r}" for i, j in zip(rows, cols) if i != j)
            return [Finding("channel_order", "warn", f"channels look swapped: {moved} (intensity profile distance "
                                                     f"{own:.2f} in the given order, {best:.2f} reordered)")]
    for i, name in enumerate(channels):
        excess = _excess(profile[i], refs[i])
        if excess > INTENSITY_LIMIT:
            out.append(Finding("intensity", "warn", f"intensities of {name!r} (median {profile[i][5]:.4g}, "
                                                    f"1–99 % {profile[i][0]:.4g} – {profile[i][-1]:.4g}) are outside "
                                                    f"the training range (median {refs[i]['median'][5]:.4g}, "
                                                    f"distance {excess:.2f} spreads)", channel=name))
    return out


def header_value(report: Mapping[str, Any]) -> str:
    """Compact form for a response header: `ok`, or `warn; channel_order,spacing` (every finding's code)."""
    codes = sorted({f["code"] for f in report.get("findings") or ()})
    return report["status"] + (f"; {','.join(codes)}" if codes else "")


def describe(report: Mapping[str, Any]) -> str:
    """One line per finding for a terminal or a log."""
    return "; ".join(f"{f['code']}: {f['message']}" for f in report.get("findings") or ())


def enforce(report: Mapping[str, Any]) -> None:
    """Raise `QARefused` when the policy is `refuse` and the report warns."""
    if report.get("policy") == "refuse" and report.get("status") == "warn":
        raise QARefused(f"input QA refused the input (policy refuse): {describe(report)}", report)


def score_percentile(score: float, reference: Mapping[str, Any] | None) -> float | None:
    """Percentage of the validation cases (card `uncertainty_reference`) whose score is ≤ `score`; None without."""
    scores = np.asarray((reference or {}).get("scores") or [], dtype=np.float64)
    if scores.size == 0:
        return None
    return round(100.0 * float(np.searchsorted(np.sort(scores), score, side="right")) / scores.size, 1)

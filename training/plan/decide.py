"""Data-level decisions of `voxray plan` (nnU-Net v2's rules), each returned with the reason written into the YAML.

Pure numpy over a `Fingerprint`: target spacing, resampling scheme, per-channel normalisation and the task.
Spacings and shapes are (z, y, x); the spec's `spacing` is (x, y, z), so callers reverse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from voxray.platform.errors import DataError
from voxray.preprocessing.resample import ANISOTROPY_THRESHOLD, low_res_axis
from voxray.training.plan.fingerprint import Fingerprint

__all__ = ["Decision", "target_spacing", "resampling", "normalisation", "task", "median_shape", "AXES"]

AXES = ("z", "y", "x")


@dataclass(frozen=True)
class Decision:
    value: Any
    why: str


def _fmt(values) -> str:
    return "×".join(f"{float(v):.3g}" for v in values)


def target_spacing(fp: Fingerprint, threshold: float = ANISOTROPY_THRESHOLD) -> Decision:
    """The per-axis median spacing; when one axis is > `threshold`× coarser than the others *and* has > `threshold`×
    fewer voxels (thick slices), that axis takes its 10th-percentile spacing instead (nnU-Net v2
    `determine_fullres_target_spacing`): resampling every case to the median slice thickness would throw away the
    thinner-sliced cases' resolution, while going all the way to in-plane resolution would invent slices."""
    spacing = np.median(fp.spacings, axis=0)
    sizes = np.median(fp.shapes, axis=0)
    worst = int(np.argmax(spacing))
    others = [i for i in range(3) if i != worst]
    aniso_spacing = spacing[worst] > threshold * max(spacing[i] for i in others)
    aniso_voxels = sizes[worst] * threshold < min(sizes[i] for i in others)
    why = f"median spacing of {fp.cases} cases ({_fmt(spacing)} mm z×y×x)"
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(fp.spacings[:, worst], 10))
        floor = max(spacing[i] for i in others)
        spacing[worst] = max(p10, floor + 1e-5) if p10 < floor else p10
        why += (f"; {AXES[worst]} is > {threshold:g}× coarser with > {threshold:g}× fewer voxels, so it takes its "
                f"10th percentile {spacing[worst]:.3g} mm (nnU-Net's anisotropy rule)")
    elif aniso_spacing:
        why += f"; {AXES[worst]} is coarse but not short in voxels, so the median stands (nnU-Net)"
    return Decision([float(s) for s in spacing], why)


def resampling(fp: Fingerprint, target_zyx: list[float], threshold: float = ANISOTROPY_THRESHOLD) -> Decision:
    """separate_z when any case's grid, or the target grid, has one axis > `threshold`× the finest (nnU-Net's
    per-case test), so thick slices are never interpolated into each other; linear otherwise (near-isotropic grids
    gain nothing measurable from splines here, and linear is the voxray default every other store uses)."""
    aniso = [i for i, s in enumerate(fp.spacings) if low_res_axis(s, threshold) is not None]
    target_axis = low_res_axis(target_zyx, threshold)
    ratio = float(np.max(fp.spacings.max(axis=1) / fp.spacings.min(axis=1)))
    if not aniso and target_axis is None:
        return Decision({"scheme": "linear"},
                        f"no case is anisotropic (largest spacing ratio {ratio:.2f} ≤ {threshold:g}): linear 3D")
    spec = {"scheme": "separate_z", "order": 3, "order_z": 0, "anisotropy_threshold": float(threshold)}
    where = f"{len(aniso)}/{fp.cases} cases" + (f" and the target grid" if target_axis is not None else "")
    return Decision(spec, f"{where} have one axis > {threshold:g}× coarser (largest ratio {ratio:.2f}): nnU-Net's "
                          "separate-z (cubic in plane, nearest across slices, per-class labels)")


def normalisation(fp: Fingerprint, modalities: dict[str, str] | None = None) -> dict[str, Decision]:
    """Per-channel scheme from the modality: MR z-score inside the body (nonzero) mask, since MR intensities have
    no absolute scale and the zero background would drag a global mean; CT clipped to the foreground's 0.5–99.5th
    percentiles then z-scored with the dataset's foreground mean/std (Hounsfield units are absolute).
    Returns {"normalize": …, "clip": …, "ct_stats": …} decisions; mixed CT/MR channels are refused (one scheme per
    store)."""
    kinds = {c: fp.modality(c, modalities) for c in fp.channels}
    ct = [c for c, k in kinds.items() if k == "CT"]
    if ct and len(ct) != len(kinds):
        raise DataError(f"channels {ct} are CT and {[c for c in kinds if c not in ct]} MR; a store normalises every "
                        "channel with one scheme", hint="plan the CT and MR channels as separate datasets")
    if not ct:
        names = ", ".join(kinds)
        return {"normalize": Decision("zscore_nonzero", f"MR channels ({names}): z-score inside the nonzero body "
                                                        "mask, background kept at 0")}
    stats = [fp.intensity.get(c) or {} for c in ct]
    if any("percentile_00_5" not in s for s in stats):
        raise DataError(f"CT channels {ct} need foreground intensity statistics",
                        hint="plan from a store (its fingerprint.json has them) or pass --intensity-cases N")
    lo = min(s["percentile_00_5"] for s in stats)
    hi = max(s["percentile_99_5"] for s in stats)
    mean = float(np.mean([s["mean"] for s in stats]))
    std = float(np.mean([s["std"] for s in stats]))
    src = f"foreground of {stats[0].get('n', '?')} sampled voxels"
    return {"normalize": Decision("ct_zscore", f"CT channels ({', '.join(ct)}): clip, then z-score with dataset "
                                               "statistics (nnU-Net CTNormalization)"),
            "clip": Decision([round(lo, 2), round(hi, 2)], f"0.5 / 99.5th percentiles of the {src}"),
            "ct_stats": Decision([round(mean, 3), round(std, 3)], f"mean / std of the {src}")}


def task(fp: Fingerprint) -> Decision:
    """brats_regions when the adapter defines regions (ET/TC/WT), binary for one foreground class, else labels."""
    meta = fp.meta
    classes = [int(k) for k in (meta.get("labels") or {}) if int(k) > 0]
    if meta.get("regions"):
        return Decision("brats_regions", f"the {meta.get('layout')} label map defines regions "
                                         f"{', '.join(meta['regions'])}, scored as overlapping sigmoid channels")
    if len(classes) == 1:
        return Decision("binary", "one foreground class: a sigmoid lesion channel")
    return Decision("labels", f"{len(classes)} exclusive classes: softmax multi-class")


def median_shape(fp: Fingerprint, target_zyx: list[float]) -> list[float]:
    """Median case size in voxels at the target spacing (cropped to the body when the fingerprint is)."""
    return [float(v) for v in np.median(fp.extents_mm / np.asarray(target_zyx), axis=0)]

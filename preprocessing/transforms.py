"""The one transform chain shared by preprocessing and serving, with its exact inverse.

Forward: reorient to RAS → crop to the nonzero bounding box → resample to the target spacing (`Resampling`: image
linear and label nearest, or nnU-Net's separate-z for anisotropic grids) → normalise per channel. Arrays leave as (C, Z, Y, X) with Z/Y/X the RAS S/A/R axes.
Every step is recorded in a JSON-serialisable `record`, so `invert_label` / `invert_scores` map a prediction on
the stored grid back onto the original file grid voxel for voxel (exact for nearest-neighbour paths).

Pure numpy/scipy/nibabel: no Ray, no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from voxray.preprocessing.normalize import NORMALIZERS, normalize_channels
from voxray.preprocessing.resample import (Resampling, from_ras_zyx, low_res_axis, resample_grid, resample_image,
                                           resample_label, target_shape, to_ras_zyx)

RECORD_VERSION = 1


@dataclass(frozen=True)
class TransformConfig:
    """What the forward chain does; stored in the store's root attrs and in model cards."""

    spacing: tuple[float, float, float] | None = None
    """Target spacing (x, y, z) in mm, RAS order; None keeps each case's spacing."""
    normalize: str = "zscore_nonzero"
    """zscore_nonzero | zscore | ct_clip | ct_zscore | none."""
    clip: tuple[float, float] | None = None
    """(low, high) window for ct_clip / ct_zscore."""
    crop_nonzero: bool = True
    """Crop to the bounding box of voxels nonzero in any channel."""
    resampling: Resampling = Resampling()
    """Resampling scheme (linear, or separate-z for anisotropic grids)."""
    ct_stats: tuple[float, float] | None = None
    """(mean, std) of the dataset's foreground intensities, for ct_zscore."""

    def __post_init__(self) -> None:
        if isinstance(self.resampling, dict):
            object.__setattr__(self, "resampling", Resampling.from_dict(self.resampling))
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"normalize {self.normalize!r} is not one of {sorted(NORMALIZERS)}")
        if self.normalize in ("ct_clip", "ct_zscore") and self.clip is None:
            raise ValueError(f"normalize {self.normalize!r} needs clip=(low, high)")
        if self.normalize == "ct_zscore" and self.ct_stats is None:
            raise ValueError("normalize 'ct_zscore' needs ct_stats=(mean, std)")
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise ValueError(f"spacing {self.spacing!r} must be three positive numbers (x, y, z)")

    @property
    def masks_background(self) -> bool:
        """Whether zero voxels mean "outside the body" (skull-stripped / masked scans, `zscore_nonzero`): models
        trained on such a store predict background there (`tasks.restrict_to_nonzero`), in validation and serving."""
        return self.normalize == "zscore_nonzero"

    @classmethod
    def from_spec(cls, spec: Any) -> "TransformConfig":
        """From a `PreprocessSpec` (or anything with its field names)."""
        res = getattr(spec, "resampling", None)
        return cls(spacing=tuple(spec.spacing) if spec.spacing else None, normalize=spec.normalize,
                   clip=tuple(spec.clip) if spec.clip else None, crop_nonzero=spec.crop_nonzero,
                   resampling=Resampling() if res is None else Resampling.from_dict(res.model_dump()),
                   ct_stats=tuple(spec.ct_stats) if getattr(spec, "ct_stats", None) else None)

    @classmethod
    def from_dict(cls, data: dict) -> "TransformConfig":
        """From `to_dict()` output (store root attrs, model cards); missing keys take the defaults."""
        unknown = set(data) - {"spacing", "normalize", "clip", "crop_nonzero", "resampling", "ct_stats"}
        if unknown:
            raise ValueError(f"unknown transform config keys {sorted(unknown)}")
        return cls(spacing=tuple(data["spacing"]) if data.get("spacing") else None,
                   normalize=data.get("normalize", "zscore_nonzero"),
                   clip=tuple(data["clip"]) if data.get("clip") else None,
                   crop_nonzero=bool(data.get("crop_nonzero", True)),
                   resampling=Resampling.from_dict(data.get("resampling")),
                   ct_stats=tuple(data["ct_stats"]) if data.get("ct_stats") else None)

    def to_dict(self) -> dict:
        """JSON form; `resampling` and `ct_stats` only when set, so stores written before they existed keep their
        spec hash."""
        d = asdict(self)
        d["spacing"] = list(self.spacing) if self.spacing else None
        d["clip"] = list(self.clip) if self.clip else None
        if self.resampling.is_default:
            d.pop("resampling")
        if self.ct_stats is None:
            d.pop("ct_stats")
        else:
            d["ct_stats"] = list(self.ct_stats)
        return d


@dataclass
class Preprocessed:
    image: np.ndarray
    """(C, Z, Y, X) float32, normalised."""
    label: np.ndarray | None
    """(Z, Y, X) uint8 or None."""
    record: dict
    """Everything the inverse needs (JSON-serialisable)."""


def check_arrays(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray) -> None:
    """Reject what would silently poison a store or a prediction: bad ranks, NaN/Inf, grid mismatches."""
    if image.ndim != 4:
        raise ValueError(f"image must be (C, I, J, K), got shape {image.shape}")
    if np.asarray(affine).shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError("affine must be a finite 4x4 matrix")
    if abs(np.linalg.det(np.asarray(affine)[:3, :3])) < 1e-12:
        raise ValueError("affine is singular (zero voxel size)")
    bad = ~np.isfinite(image)
    if bad.any():
        ch = sorted({int(c) for c in np.nonzero(bad.reshape(image.shape[0], -1).any(axis=1))[0]})
        raise ValueError(f"image has {int(bad.sum())} NaN/Inf voxels (channels {ch})")
    if label is not None and label.shape != image.shape[1:]:
        raise ValueError(f"label shape {label.shape} does not match image shape {image.shape[1:]}")


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """[[z0, z1], [y0, y1], [x0, x1]] (half-open) of voxels nonzero in any channel; the full grid if none are."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return [[0, s] for s in mask.shape]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        box.append([int(idx[0]), int(idx[-1]) + 1])
    return box


def _crop(arr: np.ndarray, box: list[list[int]]) -> np.ndarray:
    sl = tuple(slice(a, b) for a, b in box)
    return arr[(Ellipsis, *sl)]


def preprocess_volume(volume: Any, cfg: TransformConfig) -> Preprocessed:
    """Forward chain on a `Volume` (image (C,I,J,K) float, label (I,J,K) or None, affine 4x4).

    Raises ValueError naming the problem for NaN/Inf, shape mismatches or a singular affine.
    """
    image = np.asarray(volume.image)
    label = None if volume.label is None else np.asarray(volume.label)
    affine = np.asarray(volume.affine, dtype=np.float64)
    check_arrays(image, label, affine)
    img_zyx, lab_zyx, ras = to_ras_zyx(image.astype(np.float32, copy=False), label, affine)
    box = nonzero_bbox(img_zyx) if cfg.crop_nonzero else [[0, s] for s in img_zyx.shape[1:]]
    img_zyx = _crop(img_zyx, box)
    lab_zyx = None if lab_zyx is None else _crop(lab_zyx, box)
    cropped_shape = list(img_zyx.shape[1:])
    spacing_zyx = ras["spacing_zyx"]
    target = cropped_shape if cfg.spacing is None else target_shape(cropped_shape, spacing_zyx, cfg.spacing[::-1])
    new_spacing = [spacing_zyx[i] * cropped_shape[i] / target[i] for i in range(3)]
    img_zyx, lab_zyx, resampling = _resample(img_zyx, lab_zyx, target, spacing_zyx, new_spacing, cfg)
    image_out, norm = normalize_channels(img_zyx, cfg.normalize, cfg.clip, cfg.ct_stats)
    record = {
        "version": RECORD_VERSION,
        "original_shape": [int(s) for s in image.shape[1:]],
        "original_affine": affine.tolist(),
        **{k: v for k, v in ras.items() if k != "spacing_zyx"},
        "original_spacing": [float(s) for s in spacing_zyx],
        "crop_bbox": box,
        "cropped_shape": cropped_shape,
        "shape": [int(s) for s in target],
        "spacing": [float(s) for s in new_spacing],
        "affine": stored_affine(ras["ras_affine_zyx"], box, cropped_shape, target).tolist(),
        "resampling": resampling,
        "normalization": norm,
        "transform": cfg.to_dict(),
        "channels": list(getattr(volume, "channels", ()) or ()),
    }
    return Preprocessed(image=image_out, label=None if lab_zyx is None else lab_zyx.astype(np.uint8), record=record)


def separate_axis(source: Sequence[float], target: Sequence[float], threshold: float) -> int | None:
    """nnU-Net's choice of the slice axis: the source grid's low-resolution axis, else the target grid's, else None."""
    axis = low_res_axis(source, threshold)
    return axis if axis is not None else low_res_axis(target, threshold)


def _resample(img: np.ndarray, lab: np.ndarray | None, target: list[int], source_spacing: Sequence[float],
              new_spacing: Sequence[float], cfg: TransformConfig) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Image and label onto `target` with the configured scheme; returns them and the record's `resampling`."""
    res = cfg.resampling
    if res.scheme == "linear":
        img = resample_grid(img, target, order=1)
        lab = None if lab is None else resample_grid(lab[None], target, order=0)[0]
        return img, lab, {"scheme": "linear", "image": "linear", "label": "nearest", "grid": "align_extent"}
    axis = separate_axis(source_spacing, new_spacing, res.anisotropy_threshold)
    body = np.any(img != 0, axis=0)
    out = resample_image(img, target, axis, res)
    lab = None if lab is None else resample_label(lab, target, axis)
    if cfg.masks_background and list(body.shape) != list(target):
        # splines ring into the background; zeros must stay "outside the body" for zscore_nonzero
        out[:, resample_label(body.astype(np.uint8), target, axis) == 0] = 0.0
    record = {"scheme": "separate_z", "axis": axis, "order": res.order, "order_z": res.order_z,
              "image": f"spline{res.order}" + ("" if axis is None else f" in plane, order {res.order_z} across"),
              "label": "per_class_linear" + ("" if axis is None else " in plane, nearest across"),
              "grid": "align_extent"}
    return out, lab, record


def stored_affine(ras_affine_zyx: Sequence, box: list[list[int]], cropped: Sequence[int],
                  shape: Sequence[int]) -> np.ndarray:
    """Voxel (z, y, x) of the stored grid → world (RAS mm); lets training write predictions as NIfTI directly."""
    a = np.asarray(ras_affine_zyx, dtype=np.float64)
    scale = np.array([cropped[i] / shape[i] for i in range(3)])
    # stored index i ↔ cropped coordinate (i + 0.5) * scale - 0.5 (grid-aligned zoom), then + crop offset
    m = np.eye(4)
    m[:3, :3] = np.diag(scale)
    m[:3, 3] = 0.5 * scale - 0.5 + np.array([b[0] for b in box])
    return a @ m


def _uncrop(arr: np.ndarray, record: dict, fill: np.ndarray) -> np.ndarray:
    """(K, *cropped) → (K, *reoriented full grid), outside the crop filled per channel."""
    full = [b for b in record["ras_shape_zyx"]]
    out = np.empty((arr.shape[0], *full), dtype=arr.dtype)
    out[...] = fill.reshape(-1, 1, 1, 1).astype(arr.dtype)
    sl = tuple(slice(a, b) for a, b in record["crop_bbox"])
    out[(slice(None), *sl)] = arr
    return out


def _check_stored_shape(shape: Sequence[int], record: dict, what: str) -> None:
    if list(shape) != list(record["shape"]):
        raise ValueError(f"{what} spatial shape {tuple(shape)} does not match the preprocessed grid "
                         f"{tuple(record['shape'])} in the record")


def invert_label(label_zyx: np.ndarray, record: dict) -> np.ndarray:
    """(Z, Y, X) label on the stored grid → (I, J, K) uint8 on the original file grid (nearest; 0 outside crop)."""
    label_zyx = np.asarray(label_zyx)
    _check_stored_shape(label_zyx.shape, record, "label")
    lab = resample_grid(label_zyx[None].astype(np.uint8), record["cropped_shape"], order=0)
    lab = _uncrop(lab, record, np.zeros(1))
    return from_ras_zyx(lab, record)[0].astype(np.uint8)


def invert_scores(scores: np.ndarray, record: dict, fill: Sequence[float] | None = None) -> np.ndarray:
    """(K, Z, Y, X) scores on the stored grid → (K, I, J, K) float32 on the original grid (linear).

    Outside the crop every voxel is background: `fill` per channel, default 1 for channel 0 and 0 for the others
    when K > 1 (probability maps), 0 when K == 1.
    """
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 4:
        raise ValueError(f"scores must be (K, Z, Y, X), got shape {scores.shape}")
    _check_stored_shape(scores.shape[1:], record, "scores")
    k = scores.shape[0]
    if fill is None:
        fill_arr = np.zeros(k, dtype=np.float32)
        if k > 1:
            fill_arr[0] = 1.0
    else:
        fill_arr = np.asarray(fill, dtype=np.float32)
        if fill_arr.shape != (k,):
            raise ValueError(f"fill has {fill_arr.size} values; scores have {k} channels")
    res = record.get("resampling") or {}
    if res.get("scheme") == "separate_z" and res.get("axis") is not None:
        # as nnU-Net exports probabilities of anisotropic cases: linear in plane, nearest across slices
        out = resample_image(scores, record["cropped_shape"], res["axis"], Resampling("separate_z", 1, 0))
    else:
        out = resample_grid(scores, record["cropped_shape"], order=1)
    out = _uncrop(out, record, fill_arr)
    return from_ras_zyx(out, record).astype(np.float32)


__all__ = ["TransformConfig", "Preprocessed", "preprocess_volume", "invert_label", "invert_scores",
           "nonzero_bbox", "check_arrays", "stored_affine", "separate_axis", "Resampling"]

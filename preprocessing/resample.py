"""Grid geometry for the transform chain: reorientation to RAS (Z, Y, X) order and grid-aligned resampling.

Resampling uses scipy's `zoom(grid_mode=True)`: voxel i of the new grid sits at old coordinate
(i + 0.5) * n_old / n_new - 0.5, so both grids cover the same physical extent and the backward zoom is the exact
inverse coordinate map (an integer upsample followed by the inverse returns a label unchanged).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from nibabel.affines import voxel_sizes
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

_RAS = axcodes2ornt("RAS")
# voxel (z, y, x) → voxel (x, y, z)
_ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def ras_grid(shape_ijk: Sequence[int], affine: np.ndarray) -> tuple[list[int], list[float]]:
    """(shape, spacing) of a file's voxel grid in RAS (z, y, x) order, from its shape and affine alone: each file
    axis goes to the RAS axis it runs along (headers are enough: nothing is decoded or reoriented)."""
    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    zooms = voxel_sizes(np.asarray(affine, dtype=np.float64))
    shape_xyz, spacing_xyz = [0, 0, 0], [0.0, 0.0, 0.0]
    for i in range(3):
        ras = int(ornt[i, 0])
        shape_xyz[ras], spacing_xyz[ras] = int(shape_ijk[i]), float(zooms[i])
    return shape_xyz[::-1], spacing_xyz[::-1]


def to_ras_zyx(image: np.ndarray, label: np.ndarray | None, affine: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(C, I, J, K) file order → (C, Z, Y, X) with X→R, Y→A, Z→S; returns views plus the geometry record."""
    ornt = io_orientation(affine)
    fwd = ornt_transform(ornt, _RAS)
    img = apply_orientation(np.moveaxis(image, 0, -1), fwd)          # X Y Z C
    img = np.ascontiguousarray(img.transpose(3, 2, 1, 0))            # C Z Y X
    lab = None
    if label is not None:
        lab = np.ascontiguousarray(apply_orientation(label, fwd).transpose(2, 1, 0))  # Z Y X
    ras_affine = affine @ inv_ornt_aff(fwd, image.shape[1:])
    ras_affine_zyx = ras_affine @ _ZYX_TO_XYZ
    spacing_xyz = voxel_sizes(ras_affine)
    geom = {
        "orientation": "".join(aff2axcodes(affine)),
        "ornt": ornt.tolist(),
        "ras_shape_zyx": [int(s) for s in img.shape[1:]],
        "ras_affine_zyx": ras_affine_zyx.tolist(),
        "spacing_zyx": [float(s) for s in spacing_xyz[::-1]],
    }
    return img, lab, geom


def from_ras_zyx(arr: np.ndarray, record: dict) -> np.ndarray:
    """(K, Z, Y, X) on the reoriented grid → (K, I, J, K) in the original file voxel order."""
    back = ornt_transform(_RAS, np.asarray(record["ornt"]))
    out = apply_orientation(arr.transpose(3, 2, 1, 0), back)         # I J K (K channels last)
    out = np.ascontiguousarray(np.moveaxis(out, -1, 0))
    if list(out.shape[1:]) != list(record["original_shape"]):
        raise ValueError(f"inverse produced shape {out.shape[1:]}, record says {record['original_shape']}")
    return out


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> list[int]:
    """Grid size that covers the same extent at the target spacing (at least one voxel per axis)."""
    return [max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target)]


def resample_grid(arr: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample every channel of (C, *S) onto `shape` (order 0 nearest, 1 linear); a no-op when S == shape."""
    shape = [int(s) for s in shape]
    if list(arr.shape[1:]) == shape:
        return arr
    zoom = [t / s for t, s in zip(shape, arr.shape[1:])]
    out = np.empty((arr.shape[0], *shape), dtype=arr.dtype)
    for c in range(arr.shape[0]):
        ndimage.zoom(arr[c], zoom, output=out[c], order=order, mode="nearest", grid_mode=True, prefilter=False)
    return out


ANISOTROPY_THRESHOLD = 3.0
"""nnU-Net's rule: a grid whose largest spacing exceeds 3× its smallest is resampled slice-wise ("separate z")."""
SCHEMES = ("linear", "separate_z")


@dataclass(frozen=True)
class Resampling:
    """How the forward chain resamples (the preprocess spec's `resampling`, stored in the transform config).

    linear: images order 1, labels nearest, in 3D (the original voxray behaviour).
    separate_z (nnU-Net v2): when a case's source or target grid is anisotropic (`low_res_axis`), images are
    resampled slice-wise with spline order `order` in plane and `order_z` across slices, labels per class (one-hot
    linear in plane, nearest across); otherwise images order `order` and labels per-class linear in 3D. Thick
    slices are not blurred into each other and thin in-plane structures keep their edges.
    """

    scheme: str = "linear"
    order: int = 3
    order_z: int = 0
    anisotropy_threshold: float = ANISOTROPY_THRESHOLD

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"resampling scheme {self.scheme!r} is not one of {list(SCHEMES)}")
        if not 0 <= self.order <= 5 or self.order_z not in (0, 1):
            raise ValueError(f"resampling order must be 0..5 and order_z 0 or 1, got {self.order}, {self.order_z}")
        if self.anisotropy_threshold <= 1:
            raise ValueError(f"anisotropy_threshold must be > 1, got {self.anisotropy_threshold}")

    @property
    def is_default(self) -> bool:
        return self == Resampling()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Resampling":
        data = dict(data or {})
        unknown = set(data) - {"scheme", "order", "order_z", "anisotropy_threshold"}
        if unknown:
            raise ValueError(f"unknown resampling keys {sorted(unknown)}")
        return cls(**data)


def low_res_axis(spacing: Sequence[float], threshold: float = ANISOTROPY_THRESHOLD) -> int | None:
    """The one axis whose spacing exceeds `threshold` × the smallest, or None (isotropic enough, or two coarse axes
    such as (0.24, 1.25, 1.25), which nnU-Net also resamples in 3D)."""
    s = np.asarray(spacing, dtype=float)
    if s.max() / s.min() <= threshold:
        return None
    coarse = np.flatnonzero(np.isclose(s, s.max(), rtol=1e-3))
    return int(coarse[0]) if coarse.size == 1 else None


def _zoom_channel(x: np.ndarray, shape: Sequence[int], order: int, axis: int | None, order_z: int) -> np.ndarray:
    """One (Z, Y, X) float array onto `shape`: 3D with `order`, or slice-wise (in plane `order`, across `order_z`)."""
    zoom = [t / s for t, s in zip(shape, x.shape)]
    spline = dict(mode="nearest", grid_mode=True)
    if axis is None:
        return ndimage.zoom(x, zoom, order=order, prefilter=order > 1, **spline)
    plane = [t for i, t in enumerate(shape) if i != axis]
    slices = np.moveaxis(x, axis, 0)
    if plane != list(slices.shape[1:]):
        pz = [p / s for p, s in zip(plane, slices.shape[1:])]
        slices = np.stack([ndimage.zoom(s, pz, order=order, prefilter=order > 1, **spline) for s in slices])
    x = np.moveaxis(slices, 0, axis)
    if x.shape[axis] != shape[axis]:
        az = [1.0] * 3
        az[axis] = shape[axis] / x.shape[axis]
        x = ndimage.zoom(x, az, order=order_z, prefilter=False, **spline)
    return x


def resample_image(arr: np.ndarray, shape: Sequence[int], axis: int | None, scheme: Resampling) -> np.ndarray:
    """(C, *S) image onto `shape` with the separate-z scheme (`axis` None = 3D spline); float32 out."""
    shape = [int(s) for s in shape]
    if list(arr.shape[1:]) == shape:
        return arr
    return np.stack([_zoom_channel(c.astype(np.float32, copy=False), shape, scheme.order, axis, scheme.order_z)
                     for c in arr]).astype(np.float32, copy=False)


def resample_label(label: np.ndarray, shape: Sequence[int], axis: int | None) -> np.ndarray:
    """(Z, Y, X) integer label onto `shape` per class: each class's one-hot linearly in plane (3D when `axis` is
    None), nearest across slices; the class with the largest interpolated value wins (ties: the lower value)."""
    shape = [int(s) for s in shape]
    if list(label.shape) == shape:
        return label
    best = np.full(shape, -1.0, dtype=np.float32)
    out = np.zeros(shape, dtype=label.dtype)
    for value in np.unique(label):
        score = _zoom_channel((label == value).astype(np.float32), shape, 1, axis, 0)
        win = score > best
        out[win], best[win] = value, score[win]
    return out

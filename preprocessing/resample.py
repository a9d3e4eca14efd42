"""Grid geometry for the transform chain: reorientation to RAS (Z, Y, X) order and grid-aligned resampling.

Resampling uses scipy's `zoom(grid_mode=True)`: voxel i of the new grid sits at old coordinate
(i + 0.5) * n_old / n_new - 0.5, so both grids cover the same physical extent and the backward zoom is the exact
inverse coordinate map (an integer upsample followed by the inverse returns a label unchanged).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from nibabel.orientations import aff2axcodes, apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

_RAS = axcodes2ornt("RAS")
# voxel (z, y, x) → voxel (x, y, z)
_ZYX_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


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
    spacing_xyz = np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0))
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

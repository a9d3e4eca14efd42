"""The smallest volume a model segments: each windowed axis must span at least half the sliding window on the model's
grid (after resampling to the card's spacing). Below that the window is mostly zero padding, so a 1×1×1 image, a
thumbnail or a single slice given to a 3D model would come back as confident nonsense; it is refused instead.

A 3D window covers (z, y, x); a 2D window covers (y, x) and slides over the slices, so a 2D model takes a single
slice. The extent is the whole image's (before cropping to the nonzero region), so an image with a small
foreground is never refused for it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from voxray.training.predict_io import InvalidInput

__all__ = ["grid_extent", "minimum_extent", "check_extent"]


def grid_extent(shape_ijk: Sequence[int], affine: np.ndarray, spacing_xyz: Sequence[float] | None
                ) -> tuple[float, float, float]:
    """(z, y, x) voxels the image spans on the model grid: each file axis's length × its spacing ÷ the target
    spacing of the RAS axis it maps to (`spacing_xyz` None: no resampling, voxel counts)."""
    from voxray.preprocessing.resample import ras_grid

    shape_zyx, voxel_zyx = ras_grid(shape_ijk, affine)
    if not spacing_xyz:  # no resampling: voxel counts
        return tuple(float(n) for n in shape_zyx)
    return tuple(float(n) * v / t for n, v, t in zip(shape_zyx, voxel_zyx, spacing_xyz[::-1]))


def minimum_extent(window: Sequence[int]) -> tuple[int, ...]:
    """Half the window per axis (rounded up): the least an image must span on the windowed axes."""
    return tuple(max(1, math.ceil(w / 2)) for w in window)


def check_extent(shape_ijk: Sequence[int], affine: np.ndarray, window: Sequence[int],
                 spacing_xyz: Sequence[float] | None) -> None:
    """InvalidInput (HTTP 422 in serving) naming the image's extent and the model's minimum when it is too small."""
    zyx = grid_extent(shape_ijk, affine, spacing_xyz)
    have = zyx[-len(window):]
    need = minimum_extent(window)
    if all(h >= n - 1e-6 for h, n in zip(have, need)):
        return
    axes = "z×y×x"[-(2 * len(window) - 1):]
    grid = f"{'×'.join(f'{s:g}' for s in spacing_xyz[::-1])} mm" if spacing_xyz else "voxel"
    got = "×".join(f"{h:.3g}" for h in have)
    kind = "3D" if len(window) == 3 else "2D (per slice)"
    raise InvalidInput(f"volume too small: it spans {got} ({axes}) voxels on the model's {grid} grid, and this "
                       f"{kind} model needs at least {'×'.join(map(str, need))} (half its "
                       f"{'×'.join(map(str, window))} window); send the whole scan, not a crop, thumbnail or "
                       "single slice")

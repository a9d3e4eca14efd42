"""Helpers of the 2D-slice layouts (lgg_tif, uwmadison_gi): numeric slice order and the stacked volume's affine."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

_TRAILING_NUMBER = re.compile(r"_(\d+)(?:_mask)?\.\w+$")


def slice_number(path: Path) -> int:
    """`TCGA_CS_4941_19960909_12.tif` → 12 (the last `_N` before the extension, `_mask` ignored)."""
    match = _TRAILING_NUMBER.search(path.name)
    if match is None:
        raise ValueError(f"no slice number in file name {path.name}")
    return int(match.group(1))


def numeric_order(paths: list[Path]) -> list[Path]:
    """Sort slice files by their number, not lexicographically (`_2` before `_10`)."""
    return sorted(paths, key=slice_number)


def gaps(numbers: list[int]) -> list[int]:
    """Slice numbers missing from 1..max (a hole in the stack would silently shift anatomy)."""
    present = set(numbers)
    return [n for n in range(1, max(numbers, default=0) + 1) if n not in present]


def stack_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """diag(row, column, slice spacing): voxel axes (row, column, slice), slices stacked on axis 2 (CONTRACTS)."""
    return np.diag([float(spacing[0]), float(spacing[1]), float(spacing[2]), 1.0])

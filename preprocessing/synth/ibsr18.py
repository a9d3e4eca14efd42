"""Synthetic IBSR18: skull-stripped T1 with CSF/GM/WM labels, anisotropic 0.9375 × 1.5 × 0.9375 mm, (X, Y, Z, 1) files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.niftiout import save_nifti, to_scanner_units
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (48, 32, 48)
HAS_TEST_SPLIT = False
SPACING = (0.9375, 1.5, 0.9375)


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY, spacing: tuple[float, float, float] = SPACING) -> list[str]:
    """`IBSR_NN/IBSR_NN_ana_strip.nii.gz` + `IBSR_NN_seg.nii.gz` (0 bg, 1 CSF, 2 GM, 3 WM); `spacing` (x, y, z) mm
    other than IBSR's own writes e.g. clinical 5 mm coronal slices."""
    grid = Grid.axis_aligned(shape, spacing)
    ids: list[str] = []
    for n in range(cases):
        case_id = f"IBSR_{n + 1:02d}"
        rng = np.random.default_rng([seed, n])
        images, _, tissue = brain_case({"t1": grid}, ["t1"], "t1", rng, lesion=None, level=level)
        t1 = to_scanner_units(images["t1"], 110.0)[..., None]
        save_nifti(out / case_id / f"{case_id}_ana_strip.nii.gz", t1, grid.affine, "int16")
        save_nifti(out / case_id / f"{case_id}_seg.nii.gz", tissue[..., None], grid.affine, "uint8")
        ids.append(case_id)
    return ids

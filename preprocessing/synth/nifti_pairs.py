"""Synthetic generic NIfTI pairs: `case_NNN/{t1,t2,label}.nii.gz` (binary lesion), read with the globs in docs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.niftiout import save_nifti, to_scanner_units
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (40, 40, 32)
HAS_TEST_SPLIT = True  # test cases are folders without label.nii.gz
IMAGES = {"T1": "*/t1.nii.gz", "T2": "*/t2.nii.gz"}
LABEL = "*/label.nii.gz"


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    grid = Grid.axis_aligned(shape, (1.0, 1.0, 1.0))
    ids: list[str] = []
    for n in range(cases + test_cases):
        case_id = f"case_{n:03d}"
        rng = np.random.default_rng([seed, n])
        images, lesion, _ = brain_case({"t1": grid}, ["t1", "t2"], "t1", rng, lesion="glioma", level=level)
        for name in ("t1", "t2"):
            save_nifti(out / case_id / f"{name}.nii.gz", to_scanner_units(images[name], 1000.0), grid.affine, "float32")
        if n < cases:
            save_nifti(out / case_id / "label.nii.gz", (lesion > 0).astype(np.uint8), grid.affine, "uint8")
        ids.append(case_id)
    return ids

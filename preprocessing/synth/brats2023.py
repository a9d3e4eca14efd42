"""Synthetic BraTS 2023 GLI: per-case folders of int16 t1n/t1c/t2w/t2f + uint8 seg (1 NCR, 2 ED, 3 ET), LPS-stored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.niftiout import save_nifti, to_scanner_units
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (48, 48, 40)
FILES = {"t1n": "t1", "t1c": "t1c", "t2w": "t2", "t2f": "flair"}  # BraTS 2023 suffix → phantom modality
SCALES = {"t1": 900.0, "t1c": 1100.0, "t2": 1300.0, "flair": 800.0}
TO_BRATS = np.array([0, 2, 1, 3], dtype=np.uint8)  # phantom codes (1 edema, 2 necrosis, 3 enh.) → 1 NCR, 2 ED, 3 ET
TRAIN_DIR = "ASNR-MICCAI-BraTS2023-GLI-Challenge-TrainingData"
VALID_DIR = "ASNR-MICCAI-BraTS2023-GLI-Challenge-ValidationData"


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    """Case folders directly under `out`, or the official Training/Validation folders when `test_cases` > 0."""
    grid = Grid.axis_aligned(shape, (1.0, 1.0, 1.0), flip=(True, True, False))  # BraTS files are stored LPS
    ids: list[str] = []
    for n in range(cases + test_cases):
        labelled = n < cases
        parent = out if not test_cases else out / (TRAIN_DIR if labelled else VALID_DIR)
        case_id = f"BraTS-GLI-{n:05d}-000"
        rng = np.random.default_rng([seed, n])
        images, lesion, _ = brain_case({"t1": grid}, list(FILES.values()), "t1", rng, lesion="glioma", level=level)
        for suffix, modality in FILES.items():
            data = to_scanner_units(images[modality], SCALES[modality])
            save_nifti(parent / case_id / f"{case_id}-{suffix}.nii.gz", data, grid.affine, "int16")
        if labelled:
            save_nifti(parent / case_id / f"{case_id}-seg.nii.gz", TO_BRATS[lesion], grid.affine, "uint8")
        ids.append(case_id)
    return ids

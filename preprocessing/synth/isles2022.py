"""Synthetic ISLES 2022 (BIDS): DWI + ADC on a 2 mm grid, FLAIR on its own finer, shifted grid, masks in derivatives/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.niftiout import save_nifti, to_scanner_units
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (40, 40, 32)
HAS_TEST_SPLIT = False
SCALES = {"dwi": 600.0, "adc": 2000.0, "flair": 450.0}


def flair_grid(dwi: Grid) -> Grid:
    """FLAIR covers the same head with a different matrix and voxel size (as in native-space ISLES scans)."""
    shape = (round(dwi.shape[0] * 1.25), round(dwi.shape[1] * 1.25), max(8, round(dwi.shape[2] * 0.75)))
    extent = np.abs(np.diag(dwi.affine)[:3]) * np.asarray(dwi.shape)
    grid = Grid.axis_aligned(shape, tuple(extent / np.asarray(shape)))
    affine = grid.affine.copy()
    affine[:3, 3] += (1.5, -2.0, 1.0)  # a small shift: the grids' origins differ too
    return Grid(grid.shape, affine)


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    """`sub-strokecaseNNNN/ses-0001/{anat,dwi}` + `derivatives/sub-…/ses-0001/…_msk.nii.gz`."""
    dwi = Grid.axis_aligned(shape, (2.0, 2.0, 2.0))
    grids = {"dwi": dwi, "adc": dwi, "flair": flair_grid(dwi)}
    ids: list[str] = []
    for n in range(cases):
        sub = f"sub-strokecase{n + 1:04d}"
        stem, ses = f"{sub}_ses-0001", out / sub / "ses-0001"
        rng = np.random.default_rng([seed, n])
        images, lesion, _ = brain_case(grids, ["dwi", "adc", "flair"], "dwi", rng, lesion="stroke", skull=True,
                                       level=level)
        save_nifti(ses / "dwi" / f"{stem}_dwi.nii.gz", to_scanner_units(images["dwi"], SCALES["dwi"]), dwi.affine, "float32")
        save_nifti(ses / "dwi" / f"{stem}_adc.nii.gz", to_scanner_units(images["adc"], SCALES["adc"]), dwi.affine, "float32")
        save_nifti(ses / "anat" / f"{stem}_FLAIR.nii.gz", to_scanner_units(images["flair"], SCALES["flair"]),
                   grids["flair"].affine, "float32")
        save_nifti(out / "derivatives" / sub / "ses-0001" / f"{stem}_msk.nii.gz", lesion, dwi.affine, "uint8")
        ids.append(sub)
    description = {"Name": "ISLES 2022 (synthetic)", "BIDSVersion": "1.6.0", "DatasetType": "raw"}
    (out / "dataset_description.json").write_text(json.dumps(description, indent=2))
    return ids

"""Synthetic MSD Task01_BrainTumour: 4D float32 (X, Y, Z, 4) images, uint8 labels, dataset.json, a macOS `._` file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.niftiout import save_nifti, to_scanner_units
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (48, 48, 40)
MODALITIES = ["flair", "t1", "t1c", "t2"]  # file channel order: FLAIR, T1w, t1gd, T2w
SCALES = {"flair": 420.0, "t1": 510.0, "t1c": 560.0, "t2": 680.0}


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    """Write imagesTr/labelsTr (labelled) and imagesTs (unlabelled); returns the case ids."""
    grid = Grid(tuple(shape), np.eye(4))  # MSD Task01 stores 1 mm isotropic voxels with an identity affine
    ids: list[str] = []
    for n in range(cases + test_cases):
        labelled = n < cases
        case_id = f"BRATS_{n + 1:03d}"
        rng = np.random.default_rng([seed, n])
        images, lesion, _ = brain_case({"t1": grid}, MODALITIES, "t1", rng, lesion="glioma", level=level)
        stack = np.stack([to_scanner_units(images[m], SCALES[m]) for m in MODALITIES], axis=-1)
        save_nifti(out / ("imagesTr" if labelled else "imagesTs") / f"{case_id}.nii.gz", stack, grid.affine, "float32")
        if labelled:
            save_nifti(out / "labelsTr" / f"{case_id}.nii.gz", lesion, grid.affine, "uint8")
        ids.append(case_id)
    (out / "imagesTs").mkdir(exist_ok=True)  # the real download always has it (nnU-Net's converter expects it)
    (out / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    _dataset_json(out, ids[:cases], ids[cases:])
    return ids


def _dataset_json(out: Path, train: list[str], test: list[str]) -> None:
    info = {
        "name": "BRATS", "description": "Gliomas segmentation tumour and oedema in on brain images (synthetic)",
        "tensorImageSize": "4D", "reference": "voxray synth", "licence": "CC-BY-SA 4.0", "release": "synthetic",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(train), "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in train],
        "test": [f"./imagesTs/{c}.nii.gz" for c in test],
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=4))

"""MSD Task01_BrainTumour: one 4D NIfTI per case (X, Y, Z, 4) in imagesTr/ (labelled) and imagesTs/ (unlabelled)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import (Case, CaseError, DatasetAdapter, Volume, nii_files, no_cases,
                                                require_dir, strip_nii)
from voxray.preprocessing.datasets.nifti_io import label_on_grid, read_nifti


class MsdBratsAdapter(DatasetAdapter):
    """`imagesTr/BRATS_001.nii.gz` 4D float32 (FLAIR, T1w, t1gd, T2w) + `labelsTr/BRATS_001.nii.gz` uint8."""

    layout = "msd_brats"
    channels = ("flair", "t1w", "t1gd", "t2w")
    labels = {0: "background", 1: "edema", 2: "non_enhancing", 3: "enhancing"}
    regions = {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout, "imagesTr", "MSD (Task01_BrainTumour)")
        self._check_dataset_json(root)
        cases: list[Case] = []
        if self.split in ("train", "all"):
            cases += [self._case(root, p, labelled=True) for p in nii_files(root / "imagesTr")]
        if self.split in ("test", "all"):
            cases += [self._case(root, p, labelled=False) for p in nii_files(root / "imagesTs")]
        if not cases:
            where = {"train": "imagesTr/", "test": "imagesTs/", "all": "imagesTr/ or imagesTs/"}[self.split]
            raise no_cases(root, self.layout, f"no .nii.gz in {where}")
        return sorted(cases, key=lambda c: c.case_id)

    def _case(self, root: Path, image: Path, labelled: bool) -> Case:
        case_id = strip_nii(image.name)
        meta = {"subset": "imagesTr" if labelled else "imagesTs"}
        if not labelled:
            return Case(case_id, {"image": image}, None, meta)
        label = root / "labelsTr" / image.name
        if not label.is_file():
            meta["problem_file"] = str(label)
            return Case(case_id, {"image": image}, None, meta, (f"missing label {label}",))
        return Case(case_id, {"image": image}, label, meta)

    @staticmethod
    def _check_dataset_json(root: Path) -> None:
        path = root / "dataset.json"
        if not path.is_file():
            return  # optional: some mirrors drop it; channel order is the documented one
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        modality = info.get("modality") or info.get("channel_names") or {}
        if modality and len(modality) != 4:
            raise DataError(f"{path}: lists {len(modality)} modalities, expected 4 (FLAIR, T1w, t1gd, T2w)")

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        path = case.images["image"]
        data, affine = read_nifti(case.case_id, path, ndim=4)
        if data.shape[-1] != len(self.channels):
            raise CaseError(case.case_id, path, f"has {data.shape[-1]} channels, expected {len(self.channels)} "
                                                f"({', '.join(self.channels)})")
        image = np.ascontiguousarray(np.moveaxis(data, -1, 0))
        label = None
        if case.label is not None:
            label = label_on_grid(case.case_id, case.label, set(self.labels), image.shape[1:], affine, resample=False)
        return Volume(image, label, affine, self.channels)

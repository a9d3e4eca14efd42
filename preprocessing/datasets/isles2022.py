"""ISLES 2022 (BIDS): DWI, ADC and FLAIR per subject in native space; FLAIR lies on its own grid.

`load()` resamples every channel onto the reference modality's grid (DWI by default, where the masks live), so a
Volume has one grid; the native grids are recorded in `Volume.meta`.
"""

from __future__ import annotations

import re
from pathlib import Path

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import (Case, DatasetAdapter, Split, Volume, build_case, no_cases,
                                                require_dir, unlabelled)
from voxray.preprocessing.datasets.nifti_io import label_on_grid, stack_channels

SUBJECT = re.compile(r"^sub-strokecase\d+$")


class Isles2022Adapter(DatasetAdapter):
    """`sub-strokecase0001/ses-0001/{anat,dwi}/…` (optionally under `rawdata/`) + `derivatives/…_msk.nii.gz`."""

    layout = "isles2022"
    channels = ("dwi", "adc", "flair")
    labels = {0: "background", 1: "infarct"}
    options = ("split", "reference_modality")

    def __init__(self, split: Split = "train", reference_modality: str = "dwi") -> None:
        super().__init__(split)
        if reference_modality not in self.channels:
            raise ValueError(f"reference_modality {reference_modality!r} is not one of {list(self.channels)}")
        self.reference_modality = reference_modality

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        raw = root / "rawdata" if (root / "rawdata").is_dir() else root
        subjects = sorted(p for p in raw.iterdir() if p.is_dir() and SUBJECT.match(p.name))
        if not subjects:
            raise DataError(f"no sub-strokecase*/ folders under {raw}; is this an ISLES 2022 (BIDS) layout?")
        cases: list[Case] = []
        for subject in subjects:
            sessions = sorted(p.name for p in subject.iterdir() if p.is_dir() and p.name.startswith("ses-"))
            if not sessions:
                cases.append(Case(subject.name, {}, None, {"problem_file": str(subject)},
                                  (f"no ses-*/ folder in {subject}",)))
            for ses in sessions:
                cases.append(self._case(root, subject, ses, multi=len(sessions) > 1))
        if self.split == "test":  # ISLES 2022 publishes no test part: "test" = subjects without a mask
            cases = unlabelled(cases)
        if not cases:
            raise no_cases(root, self.layout, f"no subject for split {self.split!r}")
        return sorted(cases, key=lambda c: c.case_id)

    def _case(self, root: Path, subject: Path, ses: str, multi: bool) -> Case:
        stem = f"{subject.name}_{ses}"
        images = {"dwi": subject / ses / "dwi" / f"{stem}_dwi.nii.gz",
                  "adc": subject / ses / "dwi" / f"{stem}_adc.nii.gz",
                  "flair": subject / ses / "anat" / f"{stem}_FLAIR.nii.gz"}
        label = root / "derivatives" / subject.name / ses / f"{stem}_msk.nii.gz"
        meta = {"session": ses, "reference_modality": self.reference_modality}
        return build_case(stem if multi else subject.name, images, label, self.split, meta)

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        image, affine, meta = stack_channels(case.case_id, case.images, self.reference_modality, resample=True)
        label = None
        if case.label is not None:
            label = label_on_grid(case.case_id, case.label, set(self.labels), image.shape[1:], affine, resample=True)
        return Volume(image, label, affine, self.channels, meta)

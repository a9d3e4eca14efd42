"""IBSR18: 18 skull-stripped T1 volumes with CSF/GM/WM label maps, anisotropic voxels (~0.94 × 1.5 × 0.94 mm)."""

from __future__ import annotations

import re
from pathlib import Path

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import (Case, DatasetAdapter, Volume, build_case, no_cases, require_dir,
                                                unlabelled)
from voxray.preprocessing.datasets.nifti_io import label_on_grid, stack_channels

CASE_DIR = re.compile(r"^IBSR_\d+$")


class Ibsr18Adapter(DatasetAdapter):
    """`IBSR_01/IBSR_01_ana_strip.nii.gz` + `IBSR_01_seg.nii.gz` (files are (X, Y, Z, 1); the singleton is dropped)."""

    layout = "ibsr18"
    channels = ("t1",)
    labels = {0: "background", 1: "csf", 2: "gray_matter", 3: "white_matter"}

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and CASE_DIR.match(p.name))
        if not dirs:
            raise DataError(f"no IBSR_NN/ case folders under {root}; is this an IBSR18 layout?")
        cases = [build_case(d.name, {"t1": d / f"{d.name}_ana_strip.nii.gz"}, d / f"{d.name}_seg.nii.gz",
                            self.split) for d in dirs]
        if self.split == "test":  # IBSR has no test part: "test" means the cases that have no label file
            cases = unlabelled(cases)
        if not cases:
            raise no_cases(root, self.layout, f"no case for split {self.split!r}")
        return cases

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        image, affine, meta = stack_channels(case.case_id, case.images, "t1", resample=False)
        label = None
        if case.label is not None:
            label = label_on_grid(case.case_id, case.label, set(self.labels), image.shape[1:], affine, resample=False)
        return Volume(image, label, affine, self.channels, meta)

"""BraTS 2023 (GLI and siblings): one folder per case, one 3D NIfTI per modality plus `-seg` (absent in validation)."""

from __future__ import annotations

import re
from pathlib import Path

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import Case, DatasetAdapter, Volume, build_case, no_cases, require_dir
from voxray.preprocessing.datasets.nifti_io import label_on_grid, stack_channels

CASE_DIR = re.compile(r"^BraTS-[A-Z]+-\d{5}-\d{3}$")


class Brats2023Adapter(DatasetAdapter):
    """`BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`; labels 1 NCR, 2 ED, 3 ET.

    The root is either a folder of case folders (e.g. the TrainingData folder) or the parent of the official
    `…TrainingData` / `…ValidationData` folders, which then serve split "train" and "test".
    """

    layout = "brats2023"
    channels = ("t1n", "t1c", "t2w", "t2f")
    labels = {0: "background", 1: "necrotic_core", 2: "edema", 3: "enhancing"}
    regions = {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        cases = [self._case(d, self.split) for d in _case_dirs(root)]
        parts = {"train": "Training", "test": "Validation"}
        if not cases:
            for part, word in parts.items():
                if self.split in (part, "all"):
                    for sub in sorted(p for p in root.iterdir() if p.is_dir() and word in p.name):
                        cases += [self._case(d, "test" if part == "test" else self.split) for d in _case_dirs(sub)]
            if not cases and not any(word in p.name for p in root.iterdir() for word in parts.values()):
                raise DataError(f"no BraTS-XXX-00000-000/ case folders under {root}; is this a BraTS 2023 layout?")
        if not cases:
            raise no_cases(root, self.layout, f"no case folders for split {self.split!r}")
        return sorted(cases, key=lambda c: c.case_id)

    def _case(self, folder: Path, split: str) -> Case:
        cid = folder.name
        images = {m: folder / f"{cid}-{m}.nii.gz" for m in self.channels}
        return build_case(cid, images, folder / f"{cid}-seg.nii.gz", split, {"folder": folder.parent.name})

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        image, affine, meta = stack_channels(case.case_id, case.images, self.channels[0], resample=False)
        label = None
        if case.label is not None:
            label = label_on_grid(case.case_id, case.label, set(self.labels), image.shape[1:], affine, resample=False)
        return Volume(image, label, affine, self.channels, meta)


def _case_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and CASE_DIR.match(p.name))

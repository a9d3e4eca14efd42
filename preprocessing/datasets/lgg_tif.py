"""TCGA LGG segmentation (Kaggle `kaggle_3m`): per patient, 3-channel uint8 TIF slices + 0/255 mask TIFs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import tifffile

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import (Case, CaseError, DatasetAdapter, Split, Volume, no_cases, require_dir,
                                                unlabelled)
from voxray.preprocessing.datasets.stack2d import gaps, numeric_order, slice_number, stack_affine

PATIENT_DIR = re.compile(r"^TCGA_[A-Z0-9]{2}_[A-Z0-9]{4}_\d{8}$")


class LggTifAdapter(DatasetAdapter):
    """`TCGA_CS_4941_19960909/TCGA_CS_4941_19960909_{n}.tif` (H×W×3: pre-contrast, FLAIR, post-contrast) and
    `…_{n}_mask.tif`, stacked in numeric slice order on voxel axis 2. The TIFs carry no geometry, so `spacing`
    (row, column, slice mm; default 1 mm) is an option. `data.csv` (clinical table) rows go to `Case.meta`."""

    layout = "lgg_tif"
    channels = ("pre_contrast", "flair", "post_contrast")
    labels = {0: "background", 1: "flair_abnormality"}
    slice_axis = 2
    options = ("split", "spacing")

    def __init__(self, split: Split = "train", spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__(split)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing {list(spacing)} must be three positive sizes in mm")
        self.spacing = tuple(float(s) for s in spacing)

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and PATIENT_DIR.match(p.name))
        if not dirs:
            raise DataError(f"no TCGA_XX_XXXX_YYYYMMDD/ patient folders under {root}; is this a kaggle_3m (lgg_tif) layout?")
        clinical = _clinical(root / "data.csv")
        cases = [self._case(d, clinical.get(d.name.rsplit("_", 1)[0], {})) for d in dirs]
        if self.split == "test":
            cases = unlabelled(cases)
        if not cases:
            raise no_cases(root, self.layout, f"no patient for split {self.split!r}")
        return cases

    def _case(self, folder: Path, clinical: dict) -> Case:
        tifs = [p for p in folder.iterdir() if p.suffix == ".tif" and not p.name.startswith(".")]
        images = numeric_order([p for p in tifs if not p.stem.endswith("_mask")])
        masks = {slice_number(p): p for p in tifs if p.stem.endswith("_mask")}
        numbers = [slice_number(p) for p in images]
        meta = {"slices": numbers, "clinical": clinical, "has_label_file": bool(masks)}
        problems = [f"no image slices ({folder.name}_N.tif) in {folder}"] if not images else []
        if gaps(numbers):
            problems.append(f"slices {gaps(numbers)} missing from {folder} (stack would skip anatomy)")
        label = None
        if self.split != "test" and masks:
            missing = [folder / f"{folder.name}_{n}_mask.tif" for n in numbers if n not in masks]
            problems += [f"missing mask {m}" for m in missing]
            label = tuple(masks[n] for n in numbers if n in masks)
        elif self.split == "train":
            problems.append(f"missing label: no *_mask.tif in {folder}")
        if problems:
            meta["problem_file"] = str(folder)
        return Case(folder.name, {"image": tuple(images)}, label, meta, tuple(problems))

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        files = case.images["image"]
        first = _read_tif(case.case_id, files[0])
        expected = (*first.shape[:2], 3)
        slices = [first] + [_read_tif(case.case_id, p) for p in files[1:]]
        for path, arr in zip(files, slices):
            if arr.shape != expected:
                raise CaseError(case.case_id, path, f"slice is {'x'.join(map(str, arr.shape))}, expected "
                                                    f"{'x'.join(map(str, expected))} like {files[0].name}")
        image = np.moveaxis(np.stack(slices, axis=2), -1, 0).astype(np.float32)  # (3, H, W, N)
        label = None if case.label is None else np.stack([_read_mask(case.case_id, p, expected[:2]) for p in case.label], axis=2)
        return Volume(np.ascontiguousarray(image), label, stack_affine(self.spacing), self.channels)


def _read_tif(case_id: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(tifffile.imread(str(path)))
    except Exception as exc:  # tifffile raises many types for damaged files
        raise CaseError(case_id, path, f"cannot read TIF ({type(exc).__name__}: {exc})") from None


def _read_mask(case_id: str, path: Path, shape: tuple[int, int]) -> np.ndarray:
    mask = _read_tif(case_id, path)
    if mask.ndim == 3 and mask.shape[-1] in (1, 3):
        mask = mask[..., 0]
    if mask.shape != shape:
        raise CaseError(case_id, path, f"mask is {'x'.join(map(str, mask.shape))}, expected {'x'.join(map(str, shape))}")
    values = set(np.unique(mask).tolist())
    if not values <= {0, 255} and not values <= {0, 1}:
        raise CaseError(case_id, path, f"mask values {sorted(values)[:6]} are not 0/255")
    return (mask > 0).astype(np.uint8)


def _clinical(path: Path) -> dict[str, dict]:
    """data.csv rows keyed by `Patient` (e.g. TCGA_CS_4941); absent file → {}."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as fh:
            return {row["Patient"]: row for row in csv.DictReader(fh) if row.get("Patient")}
    except (OSError, KeyError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the clinical table ({exc}); expected a `Patient` column") from None

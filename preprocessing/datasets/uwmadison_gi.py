"""UW-Madison GI tract (Kaggle): uint16 PNG slices per case-day + `train.csv` RLE masks (overlapping → bitmask)."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import Case, CaseError, DatasetAdapter, Split, Volume, no_cases, require_dir
from voxray.preprocessing.datasets.rle import ORDERS, RleOrder, rle_decode
from voxray.preprocessing.datasets.stack2d import stack_affine

SLICE = re.compile(r"^slice_(\d+)_(\d+)_(\d+)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png$")
CLASSES = ("large_bowel", "small_bowel", "stomach")


class UwMadisonGiAdapter(DatasetAdapter):
    """`train/case123/case123_day20/scans/slice_0001_266_266_1.50_1.50.png` (width, height, pixel width/height mm);
    one case per case-day, slices stacked on voxel axis 2 in slice-number order. `train.csv` (`id,class,segmentation`)
    holds RLE masks (see `rle.py` for the order); classes may overlap, so labels are a bitmask: bit k-1 ⇔ class k.
    Options: `rle_order` ("row", the competition's), `slice_thickness` in mm (3.0; not in the file names)."""

    layout = "uwmadison_gi"
    channels = ("mri",)
    labels = {0: "background", 1: "large_bowel", 2: "small_bowel", 3: "stomach"}
    label_encoding = "bitmask"
    slice_axis = 2
    options = ("split", "rle_order", "slice_thickness")

    def __init__(self, split: Split = "train", rle_order: RleOrder = "row", slice_thickness: float = 3.0) -> None:
        super().__init__(split)
        if rle_order not in ORDERS:
            raise ValueError(f"rle_order {rle_order!r} is not one of {list(ORDERS)}")
        if slice_thickness <= 0:
            raise ValueError(f"slice_thickness {slice_thickness} must be > 0 mm")
        self.rle_order, self.slice_thickness = rle_order, float(slice_thickness)

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        folders = [f for f, want in (("train", self.split != "test"), ("test", self.split != "train")) if want]
        if not any((root / f).is_dir() for f in folders):
            raise DataError(f"no {' or '.join(f + '/' for f in folders)} under {root}; "
                            "is this a UW-Madison GI tract (Kaggle) layout?")
        rows = _read_csv(root / "train.csv") if "train" in folders else {}
        cases: list[Case] = []
        for folder in folders:
            for day in sorted((root / folder).glob("case*/case*_day*")):
                if day.is_dir():
                    cases.append(self._case(day, rows, root / "train.csv", labelled=folder == "train"))
        if not cases:
            raise no_cases(root, self.layout, f"no caseN/caseN_dayM/scans/ folders in {', '.join(folders)}")
        return sorted(cases, key=lambda c: c.case_id)

    def _case(self, day: Path, rows: dict, csv_path: Path, labelled: bool) -> Case:
        files, problems = _slices(day / "scans")
        meta = {"slices": [n for n, _ in files], "rle_order": self.rle_order}
        if files:
            meta["size_from_name"] = list(files[0][1][1])  # (height, width)
            meta["spacing"] = [*files[0][1][2], self.slice_thickness]  # (row, column, slice) mm
        label = None
        if labelled:
            if day.name in rows:
                meta["rle"] = rows[day.name]
                label = csv_path
            else:
                problems.append(f"missing label: no rows for {day.name} in {csv_path}")
        if problems:
            meta["problem_file"] = str(day / "scans")
        images = {"mri": tuple(p for _, (p, _, _) in files)}
        return Case(day.name, images, label, meta, tuple(problems))

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        height, width = case.meta["size_from_name"]
        slices = [_read_png(case.case_id, p, (height, width)) for p in case.images["mri"]]
        image = np.stack(slices, axis=2)[None].astype(np.float32)  # (1, H, W, N)
        label = None if case.label is None else self._label(case, (height, width))
        return Volume(image, label, stack_affine(case.meta["spacing"]), self.channels)

    def _label(self, case: Case, shape: tuple[int, int]) -> np.ndarray:
        index = {n: k for k, n in enumerate(case.meta["slices"])}
        label = np.zeros((*shape, len(index)), dtype=np.uint8)
        for number, classes in case.meta["rle"].items():
            rid = f"{case.case_id}_slice_{int(number):04d}"
            if int(number) not in index:
                raise CaseError(case.case_id, case.label, f"row {rid} has no slice file in {case.case_id}/scans")
            for cls, rle in classes.items():
                try:
                    mask = rle_decode(rle, shape, self.rle_order)
                except ValueError as exc:
                    raise CaseError(case.case_id, case.label, f"row {rid} ({cls}): {exc}") from None
                label[..., index[int(number)]] |= np.uint8(mask) << np.uint8(CLASSES.index(cls))
        return label


def _slices(scans: Path) -> tuple[list[tuple[int, tuple]], list[str]]:
    """(slice number, (path, (height, width), (row mm, column mm))) sorted by number, plus naming problems."""
    if not scans.is_dir():
        return [], [f"no scans/ folder in {scans.parent}"]
    out, problems = [], []
    for path in sorted(p for p in scans.iterdir() if p.suffix == ".png" and not p.name.startswith(".")):
        m = SLICE.match(path.name)
        if m is None:
            problems.append(f"unexpected slice file name {path} (want slice_NNNN_W_H_PW_PH.png)")
            continue
        number, width, height, px_w, px_h = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])
        out.append((number, (path, (height, width), (px_h, px_w))))
    out.sort(key=lambda item: item[0])
    if not out and not problems:
        problems.append(f"no slice_*.png in {scans}")
    sizes = {item[1][1] for item in out}
    if len(sizes) > 1:
        problems.append(f"slices in {scans} have different sizes {sorted(sizes)} (height, width)")
    return out, problems


def _read_png(case_id: str, path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            arr = np.asarray(img)
    except Exception as exc:  # Pillow raises several types for damaged files
        raise CaseError(case_id, path, f"cannot read PNG ({type(exc).__name__}: {exc})") from None
    if arr.shape != tuple(shape):
        raise CaseError(case_id, path, f"PNG is {arr.shape[0]}x{arr.shape[1]} (height x width) but its name says "
                                       f"{shape[0]}x{shape[1]}")
    return arr


def _read_csv(path: Path) -> dict[str, dict[int, dict[str, str]]]:
    """train.csv → {case_day: {slice number: {class: rle}}} (non-empty masks only)."""
    if not path.is_file():
        raise DataError(f"no train.csv under {path.parent}; the labelled split needs it (or use split: test)")
    out: dict[str, dict[int, dict[str, str]]] = defaultdict(dict)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"id", "class", "segmentation"} <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: columns {reader.fieldnames} must include id, class, segmentation")
        for line, row in enumerate(reader, start=2):
            day, sep, number = row["id"].rpartition("_slice_")
            if not sep or not number.isdigit() or row["class"] not in CLASSES:
                raise DataError(f"{path}:{line}: bad row id {row['id']!r} / class {row['class']!r} "
                                f"(want caseN_dayM_slice_NNNN and one of {list(CLASSES)})")
            slices = out[day]
            slices.setdefault(int(number), {})
            if row["segmentation"].strip():
                slices[int(number)][row["class"]] = row["segmentation"].strip()
    return {day: {n: c for n, c in slices.items() if c} for day, slices in out.items()}

"""Synthetic UW-Madison GI tract: uint16 PNG slices per case-day and a train.csv of row-major RLE masks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from voxray.preprocessing.datasets.rle import rle_encode
from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.abdomen import abdomen_case
from voxray.preprocessing.synth.phantom import Grid

DEFAULT_SHAPE = (64, 64, 12)  # rows (height), columns (width), slices
SPACING = (1.5, 1.5, 3.0)
CLASSES = ("large_bowel", "small_bowel", "stomach")


def case_day(n: int) -> tuple[str, str]:
    """Two days per case, as in the real data: (case123, case123_day0), (case123, case123_day20), (case124, …)."""
    case = f"case{123 + n // 2}"
    return case, f"{case}_day{0 if n % 2 == 0 else 20}"


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    """`train/caseN/caseN_dayM/scans/slice_NNNN_W_H_1.50_1.50.png` + `train.csv`; test case-days under `test/`."""
    grid = Grid.axis_aligned(shape, SPACING)
    height, width, depth = shape
    rows: list[tuple[str, str, str]] = []
    ids: list[str] = []
    for n in range(cases + test_cases):
        case, day = case_day(n)
        scans = out / ("train" if n < cases else "test") / case / day / "scans"
        scans.mkdir(parents=True, exist_ok=True)
        image, masks = abdomen_case(grid, np.random.default_rng([seed, n]), level)
        pixels = np.clip(image * 1000.0, 0, 65535).astype(np.uint16)
        for k in range(depth):
            name = f"slice_{k + 1:04d}_{width}_{height}_{SPACING[1]:.2f}_{SPACING[0]:.2f}.png"
            Image.fromarray(pixels[:, :, k]).save(scans / name, compress_level=1)
            if n < cases:
                rows += [(f"{day}_slice_{k + 1:04d}", c, rle_encode(masks[c][:, :, k])) for c in CLASSES]
        ids.append(day)
    with (out / "train.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "class", "segmentation"])
        writer.writerows(rows)
    return ids

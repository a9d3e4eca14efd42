"""Synthetic TCGA LGG (`kaggle_3m`): per patient, H×W×3 uint8 TIF slices (pre-contrast, FLAIR, post-contrast),
0/255 mask TIFs and a `data.csv` clinical table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY
from voxray.preprocessing.synth.phantom import Grid, brain_case

DEFAULT_SHAPE = (256, 256, 12)  # rows, columns, slices (the real TIFs are 256×256×3)
HAS_TEST_SPLIT = False
MODALITIES = ("t1", "flair", "t1c")
INSTITUTIONS = ("CS", "DU", "EZ", "FG", "HT")


def patient(n: int) -> tuple[str, str]:
    """(`TCGA_CS_4941`, `TCGA_CS_4941_19960909`)-style ids."""
    pid = f"TCGA_{INSTITUTIONS[n % len(INSTITUTIONS)]}_{4941 + n:04d}"
    return pid, f"{pid}_{19960909 + 100 * n}"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale like the Kaggle export: robust maximum → 255."""
    top = float(np.percentile(image, 99.8)) or 1.0
    return np.clip(image / top * 240.0, 0, 255).astype(np.uint8)


def write(out: Path, cases: int, test_cases: int, seed: int, shape: tuple[int, int, int],
          level: int = DEFAULT_DIFFICULTY) -> list[str]:
    grid = Grid.axis_aligned(shape, (1.0, 1.0, 4.0))
    table: list[dict] = []
    ids: list[str] = []
    for n in range(cases):
        pid, folder = patient(n)
        rng = np.random.default_rng([seed, n])
        images, lesion, _ = brain_case({"t1": grid}, list(MODALITIES), "t1", rng, lesion="glioma",
                                       fill=(0.42, 0.42, 0.8), level=level)  # a slab of slices through the head
        rgb = np.stack([to_uint8(images[m]) for m in MODALITIES], axis=-1)  # H W N 3
        (out / folder).mkdir(parents=True, exist_ok=True)
        for k in range(shape[2]):
            tifffile.imwrite(out / folder / f"{folder}_{k + 1}.tif", rgb[:, :, k], photometric="rgb")
            tifffile.imwrite(out / folder / f"{folder}_{k + 1}_mask.tif", (lesion[:, :, k] > 0).astype(np.uint8) * 255)
        table.append({"Patient": pid, "RNASeqCluster": int(rng.integers(1, 5)), "MethylationCluster": int(rng.integers(1, 6)),
                      "histological_type": int(rng.integers(1, 3)), "neoplasm_histologic_grade": int(rng.integers(1, 3)),
                      "gender": int(rng.integers(1, 3)), "age_at_initial_pathologic": int(rng.integers(20, 75)),
                      "death01": int(rng.integers(0, 2))})
        ids.append(folder)
    with (out / "data.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    return ids

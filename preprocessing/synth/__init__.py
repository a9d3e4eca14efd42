"""Synthetic datasets in the exact on-disk layouts of the real ones, so every adapter is tested without downloads.

`synth_dataset(layout, out, cases, seed, shape, test_cases, difficulty)` is deterministic per seed; `difficulty`
(0 easy … 3 hard, default 2) sets noise, bias field, partial volume, contrast jitter, lesion texture and unlabelled
look-alikes (`appearance.LEVELS`, docs/datasets.md). The default is calibrated so that a per-voxel intensity
classifier cannot solve the lesion layouts (training.baseline).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from pathlib import Path

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY, LEVELS

log = logging.getLogger(__name__)

_WRITERS = {
    "msd_brats": "voxray.preprocessing.synth.msd_brats",
    "isles2022": "voxray.preprocessing.synth.isles2022",
    "brats2023": "voxray.preprocessing.synth.brats2023",
    "ibsr18": "voxray.preprocessing.synth.ibsr18",
    "lgg_tif": "voxray.preprocessing.synth.lgg_tif",
    "uwmadison_gi": "voxray.preprocessing.synth.uwmadison_gi",
    "nifti_pairs": "voxray.preprocessing.synth.nifti_pairs",
}
SYNTH_LAYOUTS: tuple[str, ...] = tuple(_WRITERS)


def default_shape(layout: str) -> tuple[int, int, int]:
    """The small default volume shape of a layout (2D layouts: rows, columns, slices)."""
    return tuple(_writer(layout).DEFAULT_SHAPE)


def synth_dataset(layout: str, out: str | Path, cases: int = 2, seed: int = 0,
                  shape: tuple[int, int, int] | None = None, test_cases: int = 0,
                  difficulty: int = DEFAULT_DIFFICULTY, spacing: tuple[float, float, float] | None = None) -> Path:
    """Write `cases` labelled (+ `test_cases` unlabelled) synthetic cases in `layout`'s real layout under `out`.

    `spacing` (x, y, z) mm replaces the layout's own voxel size where the writer allows it (ibsr18: thick-slice
    variants for anisotropic resampling and planning)."""
    writer = _writer(layout)
    if difficulty not in LEVELS:
        raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty!r}")
    if cases < 1 or test_cases < 0:
        raise ValueError(f"cases must be >= 1 and test_cases >= 0, got cases={cases}, test_cases={test_cases}")
    shape = tuple(int(s) for s in (shape or writer.DEFAULT_SHAPE))
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape {list(shape)} must be three sizes of at least 4 voxels")
    if test_cases and not getattr(writer, "HAS_TEST_SPLIT", True):
        raise ValueError(f"layout {layout!r} has no unlabelled test part in the real dataset; use test_cases=0")
    extra = {}
    if spacing is not None:
        if "spacing" not in inspect.signature(writer.write).parameters:
            raise ValueError(f"layout {layout!r} writes its real spacing only; --spacing works for ibsr18")
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing {list(spacing)} must be three positive sizes in mm")
        extra["spacing"] = tuple(float(s) for s in spacing)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ids = writer.write(out, cases, test_cases, seed, shape, level=difficulty, **extra)
    log.info("synth %s: %d cases %s, difficulty %d, in %.1f s → %s", layout, len(ids), shape, difficulty,
             time.perf_counter() - start, out)
    return out


def _writer(layout: str):
    if layout not in _WRITERS:
        raise ValueError(f"unknown layout {layout!r}; synth supports: {', '.join(SYNTH_LAYOUTS)}")
    return importlib.import_module(_WRITERS[layout])


__all__ = ["SYNTH_LAYOUTS", "DEFAULT_DIFFICULTY", "LEVELS", "default_shape", "synth_dataset"]

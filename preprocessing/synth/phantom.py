"""Anatomy-like brain phantoms defined in world space, so one head can be rendered on several grids (ISLES FLAIR vs DWI).

A head is an irregular ellipsoid with CSF rim, gyral grey-matter cortex, white matter, ventricles and deep grey
nuclei; optional scalp and skull for layouts that are not skull-stripped. Lesions (`lesions.py`) are gliomas with
nested sub-regions (enhancing ⊂ core ⊂ whole tumour, as in BraTS) or stroke infarcts, plus unlabelled look-alikes;
`appearance.py` renders each sequence with partial volume, per-case contrast, bias field and Rician noise at a
chosen difficulty. Everything is a threshold on smooth random fields evaluated on normalised head coordinates
u = (world − centre) / radii, so shapes scale with the field of view and a case is a pure function of its generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY, Difficulty, difficulty, render
from voxray.preprocessing.synth.fields import Grid, SmoothField, distance, ellipsoid

# Tissue codes of the phantom (IBSR uses 1..3 directly as its label map).
BG, CSF, GM, WM, SCALP, BONE = range(6)


@dataclass(frozen=True)
class Head:
    """A random head: world centre and radii (mm) plus the fields that shape its boundaries."""

    centre: np.ndarray
    radii: np.ndarray
    outline: SmoothField
    gyri: SmoothField

    @classmethod
    def sample(cls, rng: np.random.Generator, grid: Grid, fill: float | tuple[float, ...] = 0.42) -> "Head":
        """A head filling about `fill` of the grid's field of view (per axis) on each side of its centre."""
        extent = np.linalg.norm(grid.affine[:3, :3], axis=0) * np.asarray(grid.shape)
        radii = np.asarray(fill, dtype=float) * extent * rng.uniform(0.93, 1.03, size=3)
        middle = grid.affine @ np.append((np.asarray(grid.shape) - 1) / 2.0, 1.0)
        centre = middle[:3] + rng.uniform(-0.03, 0.03, size=3) * extent
        return cls(centre, radii, SmoothField(rng, 6, 2.0), SmoothField(rng, 8, 7.0))

    def coords(self, grid: Grid) -> list[np.ndarray]:
        """Normalised head coordinates u of the grid's voxels (|u| < 1 inside the brain, before perturbation)."""
        return [(w - c) / r for w, c, r in zip(grid.world(), self.centre.astype(np.float32), self.radii.astype(np.float32))]

    def tissue(self, u: list[np.ndarray], skull: bool = False) -> np.ndarray:
        """Tissue codes (BG, CSF, GM, WM[, SCALP, BONE]) as uint8."""
        rho = distance(u, (0, 0, 0)) * (1.0 + 0.05 * self.outline(u))
        out = np.zeros(rho.shape, dtype=np.uint8)
        out[rho < 1.0] = WM
        out[(rho < 1.0) & (rho >= 0.80 + 0.06 * self.gyri(u))] = GM
        out[(rho < 1.0) & (rho >= 0.955)] = CSF
        for side in (-1, 1):
            out[ellipsoid(u, (0.23 * side, -0.05, 0.0), (0.11, 0.13, 0.11))] = GM   # deep grey nuclei
            out[ellipsoid(u, (0.10 * side, 0.05, 0.12), (0.07, 0.28, 0.12))] = CSF  # lateral ventricles
        if skull:
            out[(rho >= 1.0) & (rho < 1.07)] = BONE
            out[(rho >= 1.07) & (rho < 1.14)] = SCALP
        return out


def brain_case(grids: dict[str, Grid], modalities: list[str], label_grid: str, rng: np.random.Generator,
               lesion: str | None, skull: bool = False, fill: float | tuple[float, ...] = 0.42,
               level: int | Difficulty = DEFAULT_DIFFICULTY) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Render `modalities` (each on its grid) of one random head; returns images, lesion labels and tissue codes
    on `label_grid`. `lesion` is "glioma", "stroke" or None; `fill` > 0.5 on an axis makes a slab through the head;
    `level` is the difficulty (appearance.LEVELS)."""
    from voxray.preprocessing.synth import lesions

    level = difficulty(level)
    head = Head.sample(rng, grids[label_grid], fill)
    lesion_seed, field_seed = (int(s) for s in rng.integers(2**31, size=2))
    per_grid: dict[str, tuple[list[np.ndarray], np.ndarray, lesions.Lesion]] = {}
    for name in dict.fromkeys([label_grid, *[grids_key(m, grids, label_grid) for m in modalities]]):
        u = head.coords(grids[name])
        tissue = head.tissue(u, skull)
        brain = (tissue > BG) & (tissue < SCALP)
        lesion_rng = np.random.default_rng(lesion_seed)  # the same lesion (and look-alikes) on every grid
        if lesion == "glioma":
            found = lesions.glioma(u, brain & (tissue != CSF), tissue == WM, lesion_rng, level)
        elif lesion == "stroke":
            found = lesions.infarct(u, brain & (tissue != CSF), lesion_rng, level)
        else:
            found = lesions.Lesion.empty(tissue.shape)
        if lesion is not None:
            lesions.mimics(u, {"csf": CSF, "gm": GM, "wm": WM}, tissue, found, lesion_rng, level)
        per_grid[name] = (u, tissue, found)
    images: dict[str, np.ndarray] = {}
    for m in modalities:
        u, tissue, found = per_grid[grids_key(m, grids, label_grid)]
        field_rng = np.random.default_rng(field_seed)  # the same lesion texture on every grid
        texture = SmoothField(field_rng, 8, 9.0)(u)
        images[m] = render(m, tissue, found.look, found.weight, SmoothField(rng, 4, 1.5)(u), texture, rng, level,
                           stripped=not skull)
    _, tissue, found = per_grid[label_grid]
    return images, found.label, tissue


def grids_key(modality: str, grids: dict[str, Grid], default: str) -> str:
    """The grid a modality is rendered on: its own when `grids` has one, else the label grid."""
    return modality if modality in grids else default


__all__ = ["BG", "CSF", "GM", "WM", "SCALP", "BONE", "Grid", "Head", "SmoothField", "brain_case", "grids_key"]

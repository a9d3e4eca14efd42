"""Anatomy-like brain phantoms defined in world space, so one head can be rendered on several grids (ISLES FLAIR vs DWI).

A head is an irregular ellipsoid with CSF rim, gyral grey-matter cortex, white matter, ventricles and deep grey
nuclei; optional scalp and skull for layouts that are not skull-stripped. Lesions are gliomas with nested sub-regions
(enhancing ⊂ core ⊂ whole tumour, as in BraTS) or stroke infarcts. Everything is a threshold on smooth random fields
evaluated on normalised head coordinates u = (world − centre) / radii, so shapes scale with the field of view and a
case is a pure function of its random generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Tissue codes of the phantom (IBSR uses 1..3 directly as its label map).
BG, CSF, GM, WM, SCALP, BONE = range(6)
# Glioma codes (MSD's convention): 1 edema, 2 necrotic / non-enhancing core, 3 enhancing tumour. Stroke: 1 infarct.
EDEMA, NECROSIS, ENHANCING = 1, 2, 3

# Relative intensities per tissue code (bg, CSF, GM, WM, scalp, bone) and per lesion code (none, 1, 2, 3).
TISSUE_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.30, 0.62, 0.85, 0.90, 0.05),
    "t1c": (0.0, 0.32, 0.64, 0.86, 0.90, 0.05),
    "t2": (0.0, 1.00, 0.62, 0.45, 0.50, 0.05),
    "flair": (0.0, 0.15, 0.62, 0.48, 0.60, 0.05),
    "dwi": (0.0, 0.15, 0.45, 0.40, 0.20, 0.02),
    "adc": (0.0, 1.00, 0.45, 0.40, 0.10, 0.02),
}
GLIOMA_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.50, 0.28, 0.55),
    "t1c": (0.0, 0.52, 0.28, 1.30),
    "t2": (0.0, 0.92, 1.08, 0.70),
    "flair": (0.0, 1.10, 0.55, 0.85),
}
STROKE_CONTRAST: dict[str, tuple[float, ...]] = {
    "dwi": (0.0, 1.35), "adc": (0.0, 0.15), "flair": (0.0, 0.95), "t1": (0.0, 0.45),
}


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and 4x4 voxel → world (RAS mm) affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def axis_aligned(cls, shape, spacing, flip: tuple[bool, bool, bool] = (False, False, False)) -> "Grid":
        """A grid centred on the world origin; `flip` negates an axis (e.g. LPS-stored BraTS files)."""
        affine = np.eye(4)
        for ax in range(3):
            sign = -1.0 if flip[ax] else 1.0
            affine[ax, ax] = sign * spacing[ax]
            affine[ax, 3] = -sign * spacing[ax] * (shape[ax] - 1) / 2.0
        return cls(tuple(int(s) for s in shape), affine)

    def world(self) -> list[np.ndarray]:
        """World x, y, z of every voxel as broadcastable float32 arrays (full arrays only for oblique grids)."""
        idx = [np.arange(n, dtype=np.float32).reshape([-1 if a == ax else 1 for a in range(3)])
               for ax, n in enumerate(self.shape)]
        a = self.affine.astype(np.float32)
        if np.count_nonzero(a[:3, :3]) == 3 and all(a[ax, ax] != 0 for ax in range(3)):
            return [a[r, r] * idx[r] + a[r, 3] for r in range(3)]  # axis-aligned: stays separable (cheap fields)
        return [a[r, 0] * idx[0] + a[r, 1] * idx[1] + a[r, 2] * idx[2] + a[r, 3] for r in range(3)]


class SmoothField:
    """A smooth random field in [-1, 1]: a few random low-frequency cosines of the normalised coordinates."""

    def __init__(self, rng: np.random.Generator, terms: int = 6, freq: float = 2.5) -> None:
        self.k = rng.normal(size=(terms, 3)) * freq
        self.phase = rng.uniform(0, 2 * np.pi, size=terms)
        self.amp = rng.uniform(0.5, 1.0, size=terms)
        self.amp /= self.amp.sum()

    def __call__(self, u: list[np.ndarray]) -> np.ndarray:
        shape = np.broadcast_shapes(*(x.shape for x in u))
        if all(x.size == x.shape[d] for d, x in enumerate(u)):
            return self._separable(u, shape)
        out = np.zeros(shape, dtype=np.float32)
        for k, p, a in zip(self.k, self.phase, self.amp):
            out += a * np.cos(k[0] * u[0] + k[1] * u[1] + k[2] * u[2] + p)
        return out

    def _separable(self, u: list[np.ndarray], shape) -> np.ndarray:
        """Axis-aligned grids: Re(Σ a·e^{i(kx·x+p)} e^{i ky·y} e^{i kz·z}) as one (XY, 2T) @ (2T, Z) matmul (~100× faster)."""
        x, y, z = (np.broadcast_to(v.reshape(-1), (n,)) for v, n in zip(u, shape))
        ex = np.exp(1j * (np.outer(x, self.k[:, 0]) + self.phase))          # X T
        ey = np.exp(1j * np.outer(y, self.k[:, 1]))                           # Y T
        ez = np.exp(1j * np.outer(z, self.k[:, 2]))                           # Z T
        exy = (ex[:, None, :] * ey[None, :, :]).reshape(-1, len(self.amp)) * self.amp  # XY T
        left = np.concatenate([exy.real, -exy.imag], axis=1)                 # XY 2T
        right = np.concatenate([ez.real, ez.imag], axis=1).T                 # 2T Z
        return (left @ right).astype(np.float32).reshape(shape)


def _ellipsoid(u: list[np.ndarray], centre, radii) -> np.ndarray:
    return sum(((x - c) / r) ** 2 for x, c, r in zip(u, centre, radii)) < 1.0


def _distance(u: list[np.ndarray], centre) -> np.ndarray:
    return np.sqrt(sum((x - c) ** 2 for x, c in zip(u, centre)))


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
        rho = _distance(u, (0, 0, 0)) * (1.0 + 0.05 * self.outline(u))
        out = np.zeros(rho.shape, dtype=np.uint8)
        out[rho < 1.0] = WM
        out[(rho < 1.0) & (rho >= 0.80 + 0.06 * self.gyri(u))] = GM
        out[(rho < 1.0) & (rho >= 0.955)] = CSF
        for side in (-1, 1):
            out[_ellipsoid(u, (0.23 * side, -0.05, 0.0), (0.11, 0.13, 0.11))] = GM   # deep grey nuclei
            out[_ellipsoid(u, (0.10 * side, 0.05, 0.12), (0.07, 0.28, 0.12))] = CSF  # lateral ventricles
        if skull:
            out[(rho >= 1.0) & (rho < 1.07)] = BONE
            out[(rho >= 1.07) & (rho < 1.14)] = SCALP
        return out


def glioma(u: list[np.ndarray], brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Glioma codes with the BraTS nesting: enhancing ⊂ core (necrosis + enhancing) ⊂ whole tumour (+ edema)."""
    direction = rng.normal(size=3)
    centre = direction / np.linalg.norm(direction) * rng.uniform(0.20, 0.38)
    r_whole = rng.uniform(0.38, 0.50)
    r_core = r_whole * rng.uniform(0.55, 0.70)
    r_necrosis = r_core * rng.uniform(0.45, 0.65)
    dist = _distance(u, centre)
    whole = (dist < r_whole * (1.0 + 0.22 * SmoothField(rng, 6, 4.0)(u))) & brain
    core = (dist < r_core * (1.0 + 0.15 * SmoothField(rng, 6, 4.0)(u))) & whole
    necrotic = (dist < r_necrosis * (1.0 + 0.20 * SmoothField(rng, 5, 5.0)(u))) & core
    out = np.zeros(dist.shape, dtype=np.uint8)
    out[whole] = EDEMA
    out[core] = ENHANCING
    out[necrotic] = NECROSIS
    return out


def infarct(u: list[np.ndarray], brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stroke lesion mask (1 = infarct): one or two irregular blobs inside the brain parenchyma."""
    out = np.zeros(brain.shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        direction = rng.normal(size=3)
        centre = direction / np.linalg.norm(direction) * rng.uniform(0.2, 0.5)
        radius = rng.uniform(0.14, 0.24)
        blob = _distance(u, centre) < radius * (1.0 + 0.25 * SmoothField(rng, 5, 5.0)(u))
        out[blob & brain] = 1
    return out


def render(tissue: np.ndarray, lesion: np.ndarray | None, tissue_lut, lesion_lut, u: list[np.ndarray],
           rng: np.random.Generator, noise: float = 0.035, stripped: bool = True) -> np.ndarray:
    """One modality: per-case jittered contrast lookup, smooth multiplicative bias field and Gaussian noise."""
    lut = np.asarray(tissue_lut, dtype=np.float32) * rng.uniform(0.93, 1.07, size=len(tissue_lut)).astype(np.float32)
    img = lut[tissue]
    if lesion is not None:
        lesion_vals = np.asarray(lesion_lut, dtype=np.float32) * rng.uniform(0.95, 1.05, size=len(lesion_lut)).astype(np.float32)
        hit = lesion > 0
        img[hit] = lesion_vals[lesion[hit]]
    img *= 1.0 + 0.15 * SmoothField(rng, 4, 1.5)(u)
    head = tissue > 0
    img += noise * rng.standard_normal(img.shape, dtype=np.float32) * (head if stripped else 1.0)
    if not stripped:
        np.abs(img, out=img)  # magnitude images: Rician-like background noise
    else:
        img[~head] = 0.0
    return img


def brain_case(grids: dict[str, Grid], modalities: list[str], label_grid: str, rng: np.random.Generator,
               lesion: str | None, skull: bool = False,
               fill: float | tuple[float, ...] = 0.42) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Render `modalities` (each on its grid) of one random head; returns images, lesion codes and tissue codes
    on `label_grid`. `lesion` is "glioma", "stroke" or None; `fill` > 0.5 on an axis makes a slab through the head."""
    head = Head.sample(rng, grids[label_grid], fill)
    lesion_seed = int(rng.integers(2**31))
    images: dict[str, np.ndarray] = {}
    lesion_maps: dict[str, np.ndarray] = {}
    tissues: dict[str, np.ndarray] = {}
    for name in dict.fromkeys([label_grid, *[grids_key(m, grids, label_grid) for m in modalities]]):
        u = head.coords(grids[name])
        tissues[name] = head.tissue(u, skull)
        brain = (tissues[name] > BG) & (tissues[name] < SCALP)
        lesion_rng = np.random.default_rng(lesion_seed)  # the same lesion on every grid
        if lesion == "glioma":
            lesion_maps[name] = glioma(u, brain & (tissues[name] != CSF), lesion_rng)
        elif lesion == "stroke":
            lesion_maps[name] = infarct(u, brain & (tissues[name] != CSF), lesion_rng)
    for m in modalities:
        g = grids_key(m, grids, label_grid)
        u = head.coords(grids[g])
        lesion_lut = (GLIOMA_CONTRAST if lesion == "glioma" else STROKE_CONTRAST).get(m) if lesion else None
        images[m] = render(tissues[g], lesion_maps.get(g), TISSUE_CONTRAST[m], lesion_lut, u, rng, stripped=not skull)
    empty = np.zeros(grids[label_grid].shape, dtype=np.uint8)
    return images, lesion_maps.get(label_grid, empty), tissues[label_grid]


def grids_key(modality: str, grids: dict[str, Grid], default: str) -> str:
    """The grid a modality is rendered on: its own when `grids` has one, else the label grid."""
    return modality if modality in grids else default

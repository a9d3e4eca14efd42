"""How a phantom looks in each MR sequence: contrast tables, difficulty levels and the rendering of one modality.

The geometry (tissue and lesion maps) lives in `phantom.py` and `lesions.py`; this module turns it into an image
the way a scanner degrades it, so that a per-voxel intensity rule cannot solve the default data:

- partial-volume edges (the intensity image is blurred before noise, labels stay hard);
- per-case contrast: every tissue/lesion intensity of every channel jittered per case;
- a smooth multiplicative bias field per channel (z-score normalisation does not remove it);
- Rician noise (magnitude of complex Gaussian noise), so dark tissue gets a positive floor as in real MR;
- lesion heterogeneity (texture) and an infiltration gradient that fades the outer oedema into normal tissue;
- unlabelled look-alikes painted by `lesions.mimics`: enhancing vessels and choroid plexus (bright on T1c like
  enhancing tumour) and white-matter hyperintensities (bright on FLAIR/T2 like oedema).

`--difficulty` picks one of `LEVELS`; docs/datasets.md lists what each level changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

# Tissue codes (see phantom.py): bg, CSF, GM, WM, scalp, bone. Relative intensities, WM ≈ 0.85 on T1.
TISSUE_CONTRAST: dict[str, tuple[float, ...]] = {
    "t1": (0.0, 0.30, 0.62, 0.85, 0.90, 0.05),
    "t1c": (0.0, 0.32, 0.64, 0.86, 0.90, 0.05),
    "t2": (0.0, 1.00, 0.62, 0.45, 0.50, 0.05),
    "flair": (0.0, 0.15, 0.62, 0.48, 0.60, 0.05),
    "dwi": (0.0, 0.15, 0.45, 0.40, 0.20, 0.02),
    "adc": (0.0, 1.00, 0.45, 0.40, 0.10, 0.02),
}

# Appearance codes of lesions and look-alikes (labels are separate: several looks share a label, mimics have none).
OEDEMA, NECROSIS, ENHANCING, SOLID, VESSEL, PLEXUS, WMH, INFARCT = range(1, 9)
LOOK_CONTRAST: dict[str, dict[int, float]] = {
    #          oedema necrosis enhancing solid(non-enh.) vessel plexus WMH infarct
    "t1": {1: 0.52, 2: 0.30, 3: 0.58, 4: 0.50, 5: 0.60, 6: 0.40, 7: 0.62, 8: 0.45},
    "t1c": {1: 0.54, 2: 0.31, 3: 1.25, 4: 0.56, 5: 1.22, 6: 1.18, 7: 0.64, 8: 0.48},
    "t2": {1: 0.90, 2: 1.02, 3: 0.66, 4: 0.82, 5: 0.60, 6: 0.80, 7: 0.86, 8: 0.90},
    "flair": {1: 1.02, 2: 0.38, 3: 0.80, 4: 0.88, 5: 0.68, 6: 0.50, 7: 0.98, 8: 0.95},
    "dwi": {1: 0.50, 2: 0.20, 3: 0.55, 4: 0.55, 5: 0.45, 6: 0.40, 7: 0.55, 8: 1.30},
    "adc": {1: 0.60, 2: 0.95, 3: 0.45, 4: 0.45, 5: 0.45, 6: 0.80, 7: 0.55, 8: 0.18},
}


@dataclass(frozen=True)
class Difficulty:
    """What a difficulty level changes; every field is a strength (0 = off)."""

    noise: float
    """Rician noise σ relative to white matter on T1 (≈ 0.85)."""
    contrast_jitter: float
    """Per-case relative jitter of each tissue/lesion intensity per channel (uniform ± this)."""
    bias: float
    """Amplitude of the smooth multiplicative bias field (1 ± bias)."""
    partial_volume: float
    """Gaussian blur σ in voxels applied before noise (partial-volume edges)."""
    texture: float
    """Amplitude of the multiplicative heterogeneity inside lesions and look-alikes."""
    infiltration: float
    """How far the outer oedema fades towards the tissue it infiltrates (0: uniform oedema, 1: invisible rim)."""
    mimics: float
    """Density of unlabelled look-alikes (vessels, choroid plexus, white-matter hyperintensities); 0 = none."""
    irregular: float
    """Irregularity of lesion shapes: perturbation amplitude of the boundary and number of extra lobes."""


LEVELS: dict[int, Difficulty] = {
    0: Difficulty(noise=0.035, contrast_jitter=0.07, bias=0.15, partial_volume=0.0, texture=0.0, infiltration=0.0,
                  mimics=0.0, irregular=0.5),
    1: Difficulty(noise=0.05, contrast_jitter=0.10, bias=0.20, partial_volume=0.5, texture=0.15, infiltration=0.4,
                  mimics=0.5, irregular=0.8),
    2: Difficulty(noise=0.07, contrast_jitter=0.12, bias=0.25, partial_volume=0.6, texture=0.25, infiltration=0.6,
                  mimics=1.0, irregular=1.0),
    3: Difficulty(noise=0.10, contrast_jitter=0.15, bias=0.35, partial_volume=0.7, texture=0.35, infiltration=0.75,
                  mimics=1.5, irregular=1.2),
}
DEFAULT_DIFFICULTY = 2


def difficulty(level: int | Difficulty) -> Difficulty:
    """The `Difficulty` of a level number (0 easy … 3 hard), or the object itself."""
    if isinstance(level, Difficulty):
        return level
    if int(level) not in LEVELS:
        raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {level!r}")
    return LEVELS[int(level)]


def jittered(values: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Per-case contrast: each entry scaled by an independent uniform factor in [1 − amount, 1 + amount]."""
    return (np.asarray(values, dtype=np.float32)
            * rng.uniform(1.0 - amount, 1.0 + amount, size=np.shape(values)).astype(np.float32))


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: |I + σ(n₁ + i n₂)| (Rician, ≥ 0)."""
    if sigma <= 0:
        return image
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag)


def render(modality: str, tissue: np.ndarray, look: np.ndarray | None, weight: np.ndarray | None,
           bias_field: np.ndarray, texture_field: np.ndarray | None, rng: np.random.Generator, level: Difficulty,
           stripped: bool = True) -> np.ndarray:
    """One modality as float32 relative intensities.

    `look` holds appearance codes (0 = normal tissue) and `weight` (0..1) how fully a voxel shows its look
    (infiltration); `bias_field` and `texture_field` are smooth fields in [-1, 1] on the same grid.
    """
    img = jittered(TISSUE_CONTRAST[modality], rng, level.contrast_jitter)[tissue]
    if look is not None and look.any():
        table = np.zeros(max(LOOK_CONTRAST[modality]) + 1, dtype=np.float32)
        for code, value in LOOK_CONTRAST[modality].items():
            table[code] = value
        table = jittered(table, rng, level.contrast_jitter)
        hit = look > 0
        value = table[look[hit]]
        if texture_field is not None and level.texture > 0:
            value = value * (1.0 + level.texture * texture_field[hit])
        w = weight[hit] if weight is not None else 1.0
        img[hit] = img[hit] + w * (value - img[hit])
    if level.partial_volume > 0:
        img = gaussian_filter(img, level.partial_volume, mode="nearest")
    img *= 1.0 + level.bias * bias_field
    img = rician(img, level.noise, rng) if level.noise > 0 else img
    if stripped:
        img[tissue == 0] = 0.0  # skull-stripped: the brain mask zeroes everything outside
    return img.astype(np.float32, copy=False)


__all__ = ["TISSUE_CONTRAST", "LOOK_CONTRAST", "Difficulty", "LEVELS", "DEFAULT_DIFFICULTY", "difficulty",
           "jittered", "rician", "render"]

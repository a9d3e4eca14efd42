"""Lesions and their look-alikes on normalised head coordinates u (|u| < 1 inside the brain).

Each generator returns a `Lesion`: the label map the dataset ships, the appearance codes the renderer paints
(`appearance.OEDEMA` …) and a weight in [0, 1] saying how fully a voxel shows its appearance. Shapes are
irregular on purpose: several perturbed lobes, oedema that spreads along white matter in fingers, patchy
enhancement, optional necrosis; sizes and sites vary from case to case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxray.preprocessing.synth.appearance import (ENHANCING, INFARCT, NECROSIS, OEDEMA, PLEXUS, SOLID, VESSEL, WMH,
                                                   Difficulty)
from voxray.preprocessing.synth.fields import SmoothField, distance, ellipsoid

# Glioma label codes (MSD's convention): 1 edema, 2 necrotic / non-enhancing core, 3 enhancing tumour. Stroke: 1.
EDEMA_LABEL, CORE_LABEL, ENHANCING_LABEL = 1, 2, 3


@dataclass
class Lesion:
    """Label map (uint8), appearance codes (uint8, 0 = normal tissue) and appearance weight (float32 0..1)."""

    label: np.ndarray
    look: np.ndarray
    weight: np.ndarray

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> "Lesion":
        return cls(np.zeros(shape, np.uint8), np.zeros(shape, np.uint8), np.ones(shape, np.float32))


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _blob(u: list[np.ndarray], centre, radius: float, rng: np.random.Generator, amp: float, freq: float) -> np.ndarray:
    """A ball whose radius is perturbed by a smooth random field: an irregular, non-ellipsoidal lump."""
    return distance(u, centre) < radius * (1.0 + amp * SmoothField(rng, 6, freq)(u))


def glioma(u: list[np.ndarray], brain: np.ndarray, white: np.ndarray, rng: np.random.Generator,
           level: Difficulty) -> Lesion:
    """A glioma with the BraTS nesting: enhancing ⊂ core (necrosis + non-enhancing + enhancing) ⊂ whole tumour."""
    irr = level.irregular
    centre = _unit(rng) * rng.uniform(0.12, 0.45)
    r_whole = rng.uniform(0.22, 0.48)
    whole = _blob(u, centre, r_whole, rng, 0.25 * irr, 4.0)
    for _ in range(int(rng.integers(0, 1 + round(2 * irr)))):  # extra lobes
        offset = centre + _unit(rng) * r_whole * rng.uniform(0.4, 0.8)
        whole |= _blob(u, offset, r_whole * rng.uniform(0.4, 0.7), rng, 0.3 * irr, 5.0)
    if irr > 0:  # oedema fingers that follow the white matter
        whole |= _blob(u, centre, r_whole * 1.45, rng, 0.35 * irr, 6.0) & white & (SmoothField(rng, 6, 7.0)(u) > 0.1)
    whole &= brain
    r_core = r_whole * rng.uniform(0.40, 0.65)
    core = _blob(u, centre, r_core, rng, 0.22 * irr, 5.0) & whole
    necrotic = (_blob(u, centre, r_core * rng.uniform(0.35, 0.7), rng, 0.25 * irr, 6.0) & core
                if rng.uniform() < 0.8 else np.zeros_like(core))
    rim = core & ~necrotic
    patch = SmoothField(rng, 6, 6.0)(u)
    enhancing = rim & (patch > np.quantile(patch[rim], rng.uniform(0.0, 0.35))) if rim.any() else rim
    label = np.zeros(brain.shape, np.uint8)
    look = np.zeros(brain.shape, np.uint8)
    label[whole], look[whole] = EDEMA_LABEL, OEDEMA
    label[core], look[core] = CORE_LABEL, SOLID
    label[necrotic], look[necrotic] = CORE_LABEL, NECROSIS
    label[enhancing], look[enhancing] = ENHANCING_LABEL, ENHANCING
    # infiltration: the oedema fades towards normal tissue with the distance from the core
    dist = distance(u, centre)
    fade = np.clip((dist - r_core) / max(r_whole * 1.45 - r_core, 1e-3), 0.0, 1.0)
    weight = np.where(look == OEDEMA, 1.0 - level.infiltration * fade, 1.0).astype(np.float32)
    return Lesion(label, look, weight)


def infarct(u: list[np.ndarray], brain: np.ndarray, rng: np.random.Generator, level: Difficulty) -> Lesion:
    """Stroke lesions (label 1): one to three irregular infarcts of varying size inside the parenchyma."""
    out = Lesion.empty(brain.shape)
    hit = np.zeros(brain.shape, bool)
    for _ in range(int(rng.integers(1, 4))):
        centre = _unit(rng) * rng.uniform(0.15, 0.55)
        hit |= _blob(u, centre, rng.uniform(0.08, 0.26), rng, 0.3 * level.irregular, 5.0)
    hit &= brain
    out.label[hit], out.look[hit] = 1, INFARCT
    core_dist = np.clip(SmoothField(rng, 5, 4.0)(u), -1.0, 1.0)
    out.weight[hit] = (1.0 - 0.5 * level.infiltration * (core_dist[hit] + 1.0) / 2.0).astype(np.float32)
    return out


def mimics(u: list[np.ndarray], tissue_codes: dict[str, int], tissue: np.ndarray, lesion: Lesion,
           rng: np.random.Generator, level: Difficulty) -> None:
    """Paint unlabelled look-alikes into `lesion.look` (in place, never over a lesion): enhancing vessels along the
    cortex and deep veins, choroid plexus in the ventricles, and periventricular / punctate white-matter
    hyperintensities. They make single-voxel intensity rules fire outside the lesion."""
    if level.mimics <= 0:
        return
    csf, gm, wm = tissue_codes["csf"], tissue_codes["gm"], tissue_codes["wm"]
    free = lesion.look == 0
    brain = (tissue == csf) | (tissue == gm) | (tissue == wm)
    width = 0.022 * np.sqrt(level.mimics)
    vessels = np.zeros(tissue.shape, bool)
    for _ in range(int(round(3 * level.mimics))):  # tubes: where two smooth level sets cross
        a, b = SmoothField(rng, 5, 3.5)(u), SmoothField(rng, 5, 3.5)(u)
        vessels |= (np.abs(a) < width) & (np.abs(b) < width * 4)
    vessels &= brain & ((tissue != wm) | (SmoothField(rng, 4, 3.0)(u) > 0.3))
    plexus = np.zeros(tissue.shape, bool)
    for side in (-1, 1):
        plexus |= ellipsoid(u, (0.10 * side, 0.10, 0.10), (0.04, 0.10, 0.05)) & (tissue == csf)
    wmh = np.zeros(tissue.shape, bool)
    for side in (-1, 1):
        for tip in (-1, 1):  # caps at the frontal and occipital horns
            wmh |= _blob(u, (0.11 * side, 0.05 + 0.33 * tip, 0.12), 0.08 * np.sqrt(level.mimics), rng, 0.3, 6.0)
    wmh |= SmoothField(rng, 10, 9.0)(u) > 0.62 - 0.05 * level.mimics  # punctate lesions
    wmh &= tissue == wm
    for mask, code in ((wmh, WMH), (vessels, VESSEL), (plexus, PLEXUS)):
        paint = mask & free
        lesion.look[paint] = code
        lesion.weight[paint] = rng.uniform(0.6, 1.0)


__all__ = ["Lesion", "glioma", "infarct", "mimics", "EDEMA_LABEL", "CORE_LABEL", "ENHANCING_LABEL"]

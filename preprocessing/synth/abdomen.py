"""An abdominal MR phantom for the UW-Madison GI layout: body with fat ring and spine, stomach, a large-bowel
frame and a small-bowel mass that overlaps it (the real masks overlap too, hence the bitmask encoding)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from voxray.preprocessing.synth.appearance import DEFAULT_DIFFICULTY, Difficulty, difficulty, jittered, rician
from voxray.preprocessing.synth.fields import Grid, SmoothField, distance
from voxray.preprocessing.synth.phantom import Head

# Relative intensities: air, fat, soft tissue, spine; organs are painted on top.
BODY_LUT = np.array([0.0, 0.90, 0.45, 0.15], dtype=np.float32)
ORGAN_INTENSITY = {"large_bowel": 0.62, "small_bowel": 0.78, "stomach": 0.28}


def abdomen_case(grid: Grid, rng: np.random.Generator, level: int | Difficulty = DEFAULT_DIFFICULTY,
                 ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One case-day: relative intensities (H, W, N) and a bool mask per organ (large_bowel, small_bowel, stomach),
    rendered with the difficulty's contrast jitter, organ texture, partial volume, bias field and Rician noise."""
    level = difficulty(level)
    body = Head.sample(rng, grid, fill=0.45)
    u = body.coords(grid)
    in_plane = np.sqrt(u[0] ** 2 + u[1] ** 2) * (1.0 + 0.04 * body.outline(u))
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    tissue[np.broadcast_to(in_plane < 1.0, grid.shape)] = 1
    tissue[np.broadcast_to(in_plane < 0.86, grid.shape)] = 2
    tissue[np.broadcast_to(distance([u[0], u[1]], (0.62, 0.0)) < 0.13, grid.shape)] = 3  # spine: posterior = +rows
    z = np.broadcast_to(u[2], tissue.shape)
    shift = rng.uniform(-0.06, 0.06, size=2)
    stomach = (distance(u, (-0.30 + shift[0], 0.35 + shift[1], 0.45)) < 0.32 * (1 + 0.2 * SmoothField(rng, 5, 4.0)(u)))
    ring = np.abs(distance([u[0], u[1]], (0.0, 0.0)) - 0.58) < 0.09 * (1 + 0.3 * SmoothField(rng, 5, 5.0)(u))
    large = ring & (z > -1.2) & (z < 0.9) & (u[0] < 0.45) & ~stomach
    small = (distance([u[0] - 0.05, u[1] + shift[1], u[2] / 1.6], (0.0, 0.0, -0.1)) < 0.56
             * (1 + 0.15 * SmoothField(rng, 6, 4.0)(u))) & ~stomach
    soft = tissue == 2
    masks = {"large_bowel": large & soft, "small_bowel": small & soft, "stomach": stomach & soft}
    image = jittered(BODY_LUT, rng, level.contrast_jitter)[tissue]
    texture = SmoothField(rng, 8, 9.0)(u)
    for name in ("large_bowel", "small_bowel", "stomach"):
        value = ORGAN_INTENSITY[name] * rng.uniform(1.0 - level.contrast_jitter, 1.0 + level.contrast_jitter)
        image[masks[name]] = value * (1.0 + level.texture * np.broadcast_to(texture, grid.shape)[masks[name]])
    if level.partial_volume > 0:
        image = gaussian_filter(image, level.partial_volume, mode="nearest")
    image *= 1.0 + max(level.bias, 0.15) * SmoothField(rng, 4, 1.5)(u)
    image = rician(image.astype(np.float32), max(level.noise, 0.03), rng)
    return image, masks

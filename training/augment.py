"""Training augmentations from `train.augment`, as a MONAI dict Compose over {"image", "label"}.

Mirrors the Factorizer recipe (reference §6): affine (±30° rotation, ±30 % scale, zero padding, output exactly
patch-sized), flips per axis, Gaussian noise, intensity scale/shift, contrast (gamma), plus an optional MR bias
field. Labels stay in store values and use nearest interpolation, so they can be encoded for any task afterwards.
Each patch is augmented with its own seed (`augment(sample, seed)`), so results do not depend on thread timing.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch
from monai.transforms import (Compose, RandAdjustContrastd, RandAffined, RandBiasFieldd, RandFlipd,
                              RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd)

from voxray.platform.specs.train import AugmentSpec

__all__ = ["build_augment", "Augmenter"]


def build_augment(spec: AugmentSpec, spatial_dims: int) -> Compose | None:
    """The Compose for `spec` (None when disabled or every probability is 0)."""
    if not spec.enabled:
        return None
    keys = ["image", "label"]
    ts = []
    if spec.affine > 0:
        rot = math.radians(30)
        ts.append(RandAffined(keys, prob=spec.affine, rotate_range=[rot] * (1 if spatial_dims == 2 else 3),
                              scale_range=[0.3] * spatial_dims, mode=["bilinear", "nearest"],
                              padding_mode="zeros"))
    if spec.flip > 0:
        ts += [RandFlipd(keys, prob=spec.flip, spatial_axis=ax) for ax in range(spatial_dims)]
    if spec.intensity > 0:
        p = spec.intensity
        ts += [RandGaussianNoised("image", prob=p, std=0.1),
               RandScaleIntensityd("image", factors=0.3, prob=p),
               RandShiftIntensityd("image", offsets=0.1, prob=p),
               RandAdjustContrastd("image", prob=p, gamma=(0.7, 1.5))]
    if spec.bias_field > 0:
        ts.append(RandBiasFieldd("image", prob=spec.bias_field, coeff_range=(0.0, 0.1)))
    return Compose(ts) if ts else None


def _plain(x: torch.Tensor) -> torch.Tensor:
    """A MetaTensor → its plain tensor (collation and DDP do not need MONAI metadata)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class Augmenter:
    """Thread-safe seeded application of `build_augment(spec)`: one Compose per thread (MONAI random transforms
    keep their draws on the object)."""

    def __init__(self, spec: AugmentSpec, spatial_dims: int) -> None:
        self.spec, self.spatial_dims = spec, spatial_dims
        self._local = threading.local()

    def _compose(self) -> Compose | None:
        if not hasattr(self._local, "compose"):
            self._local.compose = build_augment(self.spec, self.spatial_dims)
        return self._local.compose

    def __call__(self, image: np.ndarray, label: np.ndarray, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """image (C, *S) float32, label (*S) → augmented (image (C, *S), label (*S) int64), deterministic in seed."""
        img, lab = torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(label.astype(np.float32))[None]
        compose = self._compose()
        if compose is not None:
            compose.set_random_state(seed=seed % (2**32))
            out = compose({"image": img, "label": lab})
            img, lab = _plain(out["image"]), _plain(out["label"])
        return img.float().contiguous(), lab[0].round().long()

"""Per-class volumes (ml) and lesion counts of a predicted mask: the `?format=json` answer of /v1/predict."""

from __future__ import annotations

from typing import Any

import numpy as np

from voxray.training.metrics import label_lesions


def class_masks(mask: np.ndarray, card: dict) -> dict[str, np.ndarray]:
    """Boolean mask per named class: label value k (index encoding) or bit k-1 (bitmask), plus BraTS regions."""
    labels = {int(k): str(v) for k, v in (card.get("labels") or {}).items() if int(k) != 0}
    bitmask = card.get("label_encoding") == "bitmask"
    out: dict[str, np.ndarray] = {}
    for value, name in sorted(labels.items()):
        out[name] = ((mask >> (value - 1)) & 1).astype(bool) if bitmask else mask == value
    for name, values in (card.get("regions") or {}).items():
        out[str(name)] = np.isin(mask, [int(v) for v in values])
    return out


def mask_summary(mask: np.ndarray, affine: np.ndarray, card: dict) -> dict[str, Any]:
    """{"classes": {name: {"volume_ml", "voxels", "lesions"}}, "voxel_ml", "shape"}; lesions are 26-connected."""
    voxel_ml = float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    classes = {}
    for name, on in class_masks(mask, card).items():
        voxels = int(on.sum())
        lesions = label_lesions(on)[1] if voxels else 0
        classes[name] = {"volume_ml": round(voxels * voxel_ml, 4), "voxels": voxels, "lesions": lesions}
    return {"shape": list(mask.shape), "voxel_ml": voxel_ml, "classes": classes}

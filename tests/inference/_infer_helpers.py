"""Inference test helpers (imported by a unique name, not `conftest`, so other test folders' helpers never shadow
them): tiny registry models and NIfTI inputs on an oblique grid."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

AFFINE = np.array([[-1.2, 0, 0, 30.0], [0, 1.0, 0, -20.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
SHAPE = (22, 20, 18)


def tiny_card(channels: list[str], task: str = "labels", **extra) -> dict:
    from voxray.preprocessing.transforms import TransformConfig

    labels = {0: "background", 1: "edema", 2: "tumour"}
    out = {"labels": 3, "binary": 1, "brats_regions": 2}[task]
    return {"model": {"name": "unet", "channels": [4, 8], "num_res_units": 0}, "spatial_dims": 3,
            "patch": [16, 16, 16], "in_channels": len(channels), "channels": channels, "out_channels": out,
            "task": task, "labels": labels if task != "binary" else {0: "background", 1: "lesion"},
            "label_encoding": "index", "regions": {"TC": [2], "WT": [1, 2]} if task == "brats_regions" else None,
            "slice_axis": None, "preprocess": TransformConfig().to_dict(), "metrics": {}, "source": {}} | extra


def export_tiny(registry: Path, channels: list[str], task: str = "labels", name: str = "tiny", **extra) -> Path:
    from voxray.training.registry import build_from_card, export_model

    torch.manual_seed(0)
    card = tiny_card(channels, task, **extra)
    return export_model(build_from_card(card), card, registry, name)


def volume(seed: int = 0, channels: int = 2, shape=SHAPE) -> np.ndarray:
    """(X, Y, Z, C): a noisy head on a zero background with a bright blob."""
    rng = np.random.default_rng(seed)
    data = np.zeros((*shape, channels), dtype=np.float32)
    data[3:-3, 2:-2, 2:-3] = rng.normal(100, 10, size=(shape[0] - 6, shape[1] - 4, shape[2] - 5, channels))
    data[8:14, 7:12, 6:11] += 80
    return data


def write(path: Path, data: np.ndarray) -> Path:
    nib.Nifti1Image(data, AFFINE).to_filename(str(path))
    return path


def train_helpers():
    """tests/training/_train_helpers.py (the fake store and learnable cases) loaded by path, whatever is on sys.path."""
    import importlib.util

    path = Path(__file__).parents[1] / "training" / "_train_helpers.py"
    spec = importlib.util.spec_from_file_location("_train_helpers_for_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module

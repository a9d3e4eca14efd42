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


def recorded_store(seeds: dict[str, int], shape=(24, 24, 24)):
    """A FakeStore of nested-sphere cases ({case id: seed}) that went through the real transform chain (identity
    affine, 1 mm, no normalisation or cropping: stored images equal the cases), with each case's transform record
    in its attrs as a real store keeps it: what export's training fingerprint reads."""
    from voxray.preprocessing.datasets import Volume
    from voxray.preprocessing.transforms import TransformConfig, preprocess_volume

    helpers = train_helpers()
    cfg = TransformConfig.from_dict({"normalize": "none", "crop_nonzero": False})
    cases, records = {}, {}
    for cid, seed in seeds.items():
        image, label = helpers.brats_like_case(shape, seed=seed)
        vol = Volume(image=image.transpose(0, 3, 2, 1).copy(), label=label.transpose(2, 1, 0).copy(),
                     affine=np.eye(4), channels=tuple(helpers.MSD_META["channels"]))
        pre = preprocess_volume(vol, cfg)
        cases[cid], records[cid] = (pre.image, pre.label), pre.record
    store = helpers.FakeStore(cases, dict(helpers.MSD_META))
    store.attrs = {"transform": cfg.to_dict()}
    store.case_attrs = lambda cid: {"spacing": records[cid]["spacing"], "record": records[cid]}
    return store


def train_unet(run: Path, store) -> tuple:
    """(spec, checkpoint dir, final metrics) of a UNet trained 30 steps on `store` (nested spheres whose channels
    show the classes): enough to learn the task, a few seconds on the CPU."""
    import pytest

    import voxray.training.loop as loop
    from voxray.platform.specs.train import TrainSpec

    spec = TrainSpec(store="unused", task="labels", model={"name": "unet", "channels": [8, 16], "num_res_units": 1},
                     patch=[16, 16, 16], batch_size=2, steps=30, optimizer={"lr": 1e-2, "weight_decay": 0.0},
                     schedule={"name": "constant"}, validation={"mode": "none"},
                     checkpoint={"every": 30, "metric": "train/loss", "mode": "min"}, tracking={"mlflow": False},
                     augment={"enabled": False}, sampling={"loader_workers": 0, "fg_fraction": 0.5})
    mp = pytest.MonkeyPatch()
    mp.setattr(loop, "open_store", lambda uri: store)
    try:
        out = loop.train_loop({"train": spec.model_dump(mode="json"), "name": "unc", "run_dir": str(run)})
    finally:
        mp.undo()
    return spec, run / "checkpoints" / "step_0000030", out

"""The seed recipes train at small size on real stores (synth → preprocess, realistic phantom): LGG unet_depth (2D,
binary), UW-Madison DeepLabV3+ (2D, bitmask multilabel), IBSR18 3D patches (softmax labels); in-process, then
exported. Each must learn: validation Dice after `steps` beats the untrained network (step 0) by `margin`."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxray.platform.specs.loader import validate_job

from _train_helpers import val_curve

STEPS = 80
MARGIN = 0.15

SEEDS = {
    "lgg_tif": dict(shape=(64, 64, 6), task="binary", patch=[32, 32], steps=STEPS, lr=1e-2, margin=MARGIN,
                    model={"name": "unet_depth", "depth": 2, "base_channels": 4}),
    "uwmadison_gi": dict(shape=(32, 32, 6), task="multilabel", patch=[32, 32], steps=160, lr=1e-2, margin=MARGIN,
                         model={"name": "deeplabv3plus", "aspp_rates": [1, 2], "aspp_channels": 8}),
    "ibsr18": dict(shape=(32, 24, 32), task="labels", patch=[16, 16, 16], steps=STEPS, lr=1e-2, margin=MARGIN,
                   model={"name": "unet", "channels": [8, 16], "num_res_units": 0}),
}


def _store(tmp: Path, layout: str, shape) -> str:
    from voxray.preprocessing.runner import run_preprocess
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset(layout, tmp / "raw", cases=3, seed=0, shape=shape)
    job = validate_job({"kind": "preprocess", "name": "pp", "preprocess": {
        "dataset": {"layout": layout, "root": str(tmp / "raw")}, "store": str(tmp / "s.zarr")}}, base_dir=tmp)
    assert run_preprocess(job).ok
    return str(tmp / "s.zarr")


@pytest.mark.slow
@pytest.mark.parametrize("layout", sorted(SEEDS))
def test_seed_trains_and_exports(layout, tmp_path, ray_session):
    from voxray.training.registry import load_model
    from voxray.training.runner import run_train

    seed = SEEDS[layout]
    train = {"store": _store(tmp_path, layout, seed["shape"]), "task": seed["task"], "model": seed["model"],
             "patch": seed["patch"], "batch_size": 2, "steps": seed["steps"], "optimizer": {"lr": seed["lr"]},
             "validation": {"every": seed["steps"], "folds": 3, "max_cases": 1, "at_start": True},
             "checkpoint": {"every": seed["steps"]},
             "scaling": {"num_workers": 0}, "sampling": {"loader_workers": 1}, "tracking": {"mlflow": False},
             "output": str(tmp_path / "runs"), "registry": str(tmp_path / "registry")}
    res = run_train(validate_job({"kind": "train", "name": f"seed-{layout.replace('_', '-')}", "train": train},
                                 base_dir=tmp_path))
    curve = val_curve(res.summary["run_dir"])
    assert res.ok and curve[seed["steps"]] >= curve[0] + seed["margin"], curve
    _, card = load_model(res.summary["model"], "cpu")
    assert card["task"] == seed["task"] and card["spatial_dims"] == len(seed["patch"])

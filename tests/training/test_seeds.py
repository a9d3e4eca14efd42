"""The seed recipes train at small size on real stores (synth → preprocess): LGG unet_depth (2D, binary),
UW-Madison DeepLabV3+ (2D, bitmask multilabel), IBSR18 3D patches (softmax labels); in-process, then exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxray.platform.specs.loader import validate_job

SEEDS = {
    "lgg_tif": dict(shape=(64, 64, 6), task="binary", patch=[32, 32],
                    model={"name": "unet_depth", "depth": 2, "base_channels": 4}),
    "uwmadison_gi": dict(shape=(32, 32, 6), task="multilabel", patch=[32, 32],
                         model={"name": "deeplabv3plus", "aspp_rates": [1, 2], "aspp_channels": 8}),
    "ibsr18": dict(shape=(24, 16, 24), task="labels", patch=[16, 16, 16],
                   model={"name": "unet", "channels": [4, 8], "num_res_units": 0}),
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
             "patch": seed["patch"], "batch_size": 2, "steps": 4, "optimizer": {"lr": 1e-3},
             "validation": {"every": 4, "folds": 3, "max_cases": 1}, "checkpoint": {"every": 4},
             "scaling": {"num_workers": 0}, "sampling": {"loader_workers": 1}, "tracking": {"mlflow": False},
             "output": str(tmp_path / "runs"), "registry": str(tmp_path / "registry")}
    res = run_train(validate_job({"kind": "train", "name": f"seed-{layout.replace('_', '-')}", "train": train},
                                 base_dir=tmp_path))
    assert res.ok and 0 <= res.summary["val/dice_mean"] <= 1
    _, card = load_model(res.summary["model"], "cpu")
    assert card["task"] == seed["task"] and card["spatial_dims"] == len(seed["patch"])

"""train_loop called directly (no Ray): learning (beats its untrained self and the per-voxel baseline on the realistic
phantom), checkpoints, resume, NaN stop, 2D seeds, tracking files."""

from __future__ import annotations

import json
import math

import pytest

import voxray.training.loop as loop
from voxray.platform.specs.train import TrainSpec
from voxray.training.checkpoint import load_state

from _train_helpers import make_fake_store, phantom_store, val_curve


def _spec(**kw) -> TrainSpec:
    base = dict(store="unused", task="brats_regions", model={"name": "unet", "channels": [8, 16], "num_res_units": 1},
                patch=[16, 16, 16], batch_size=2, steps=8, optimizer={"lr": 3e-3, "weight_decay": 0.0},
                schedule={"name": "constant"}, validation={"every": 4, "folds": 3, "max_cases": 1},
                checkpoint={"every": 4}, tracking={"mlflow": False}, augment={"enabled": False},
                sampling={"loader_workers": 1, "fg_fraction": 0.5})
    base.update(kw)
    return TrainSpec(**base)


@pytest.fixture
def patched_store(monkeypatch):
    store = make_fake_store(4, shape=(16, 16, 16))
    monkeypatch.setattr(loop, "open_store", lambda uri: store)
    return store


def _run(spec: TrainSpec, run_dir) -> dict:
    return loop.train_loop({"train": spec.model_dump(mode="json"), "name": "t", "run_dir": str(run_dir)})


@pytest.mark.slow
def test_trains_validates_checkpoints_and_resumes(patched_store, tmp_path):
    out = _run(_spec(), tmp_path)
    assert out["step"] == 8 and math.isfinite(out["train/loss"])
    assert {"val/dice_mean", "baseline/dice_mean"} <= set(out)  # every validation carries its baseline
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step_0000004", "step_0000008"]
    state = load_state(tmp_path / "checkpoints" / "step_0000008")
    assert state["step"] == 8 and len(state["samplers"]) == 1 and "optimizer" in state
    assert json.loads((tmp_path / "split.json").read_text())["val"]
    assert (tmp_path / "progress.png").exists() and list((tmp_path / "overlays").glob("*.png"))
    # the same job with more steps resumes at 8; the finished run is not retrained
    out2 = _run(_spec(steps=12), tmp_path)
    assert out2["step"] == 12
    assert load_state(tmp_path / "checkpoints" / "step_0000012")["scheduler"]["last_epoch"] == 12
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert sum(1 for r in rows if r.startswith("8,val/dice_mean")) == 1


LEARN_MARGIN_OVER_BASELINE = 0.15
LEARN_MARGIN_OVER_START = 0.3


@pytest.mark.slow
def test_learns_beyond_its_untrained_self_and_the_per_voxel_baseline(monkeypatch, tmp_path):
    """200 steps of a small U-Net on the realistic phantom (difficulty 2, 4 training / 2 validation cases): the
    validation Dice must beat the untrained network (step 0) and the per-voxel intensity baseline on the same cases.
    Measured here: step 0 0.078, step 200 0.658, baseline 0.345; with lr 0 the Dice stays at its step-0 value."""
    store = phantom_store(6, (40, 40, 32))
    monkeypatch.setattr(loop, "open_store", lambda uri: store)
    spec = _spec(model={"name": "unet", "channels": [8, 16, 32], "num_res_units": 1}, patch=[24, 24, 24], steps=200,
                 optimizer={"lr": 1e-2, "weight_decay": 0.0}, checkpoint={"every": 200},
                 validation={"every": 200, "folds": 3, "max_cases": 2, "overlap": 0.25, "at_start": True})
    out = _run(spec, tmp_path)
    curve = val_curve(tmp_path)
    assert sorted(curve) == [0, 200]
    assert curve[200] >= curve[0] + LEARN_MARGIN_OVER_START, curve
    assert out["val/dice_mean"] >= out["baseline/dice_mean"] + LEARN_MARGIN_OVER_BASELINE, out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(patched_store, tmp_path, monkeypatch):
    _run(_spec(steps=4), tmp_path)
    real = loop.build_loss
    monkeypatch.setattr(loop, "build_loss", lambda spec, task: (lambda out, y: real(spec, task)(out, y) * math.nan))
    out = _run(_spec(steps=8), tmp_path)
    assert out[loop.NAN_KEY] == 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir())[-1] == "step_0000004"


@pytest.mark.slow
def test_2d_seed_mode_on_slices(patched_store, tmp_path):
    spec = _spec(task="labels", model={"name": "unet_depth", "depth": 2, "base_channels": 4}, patch=[16, 16],
                 steps=2, validation={"every": 2, "folds": 2, "max_cases": 1},
                 sampling={"slice_mode": "most_populated", "loader_workers": 0}, channels=["t1gd"])
    out = _run(spec, tmp_path)
    assert {"val/dice_mean", "val/iou_mean", "val/pixel_accuracy", "val/mse"} <= set(out)

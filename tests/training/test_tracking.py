"""Tracking: metrics.csv truncation on resume, progress.png, MLflow (SQLite under the run dir) reopened by id."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.training.tracking import Tracker, read_metrics, save_overlay


@pytest.mark.slow
def test_tracker_resume_truncates_and_reuses_the_mlflow_run(tmp_path):
    t = Tracker(tmp_path, mlflow_enabled=True, experiment="exp", params={"train": {"lr": 0.1, "model": {"n": 1}}})
    for step in (1, 2, 3):
        t.log(step, {"train/loss": 1.0 / step, "val/dice_mean": step / 4})
    t.plot()
    run_id = t.run_id
    t.close()
    assert (tmp_path / "progress.png").stat().st_size > 1000
    again = Tracker(tmp_path, mlflow_enabled=True, experiment="exp", start_step=2)  # resumed from step 2
    assert again.run_id == run_id
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.csv")) == 2
    again.close()
    import mlflow

    run = mlflow.get_run(run_id)
    assert run.data.params["train.model.n"] == "1" and run.data.metrics["val_dice_mean"] == 0.75


def test_overlay_png(tmp_path):
    img = np.random.rand(16, 16)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 3
    save_overlay(img, mask, mask, tmp_path / "o" / "x.png", "case")
    assert (tmp_path / "o" / "x.png").stat().st_size > 500

"""`train.ensemble: folds` end to end at smoke size: one train job trains fold 0 and fold 1 (each validating on its
own held-out cases), exports them and an ensemble entry listing them; the entry predicts through the CLI and HTTP
with a mask on the input grid, and its probabilities are the mean of the two folds'."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import voxray.training.loop as loop
import voxray.training.runner as runner
from voxray.platform.cli.app import main
from voxray.platform.errors import SpecError
from voxray.platform.specs.loader import validate_job
from voxray.training.predict import Predictor, predict_images
from voxray.training.registry import load_model, read_card

from _http import http_mask
from _infer_helpers import recorded_store, volume, write

pytestmark = pytest.mark.slow

TRAIN = dict(task="labels", model={"name": "unet", "channels": [4, 8], "num_res_units": 0}, patch=[16, 16, 16],
             batch_size=1, steps=4, optimizer={"lr": 3e-3, "weight_decay": 0.0}, schedule={"name": "constant"},
             checkpoint={"every": 4}, tracking={"mlflow": False}, augment={"enabled": False},
             sampling={"loader_workers": 0, "fg_fraction": 0.5}, scaling={"num_workers": 0}, ensemble="folds")


def _job(tmp_path, **validation):
    return validate_job({"kind": "train", "name": "cv", "train": {
        **TRAIN, "store": str(tmp_path / "s.zarr"), "output": str(tmp_path / "runs"),
        "registry": str(tmp_path / "reg"), "validation": {"every": 4, "folds": 2, **validation}}})


def test_two_fold_ensemble_trains_exports_and_predicts(tmp_path, monkeypatch):
    store = recorded_store({f"case{i:02d}": i for i in range(4)})
    store.label_encoding = "index"
    monkeypatch.setattr(runner, "open_store", lambda uri: store)
    monkeypatch.setattr(loop, "open_store", lambda uri: store)
    res = runner.run_train(_job(tmp_path))
    splits = [json.loads((tmp_path / "runs" / f"cv-fold{k}" / "split.json").read_text()) for k in (0, 1)]
    assert set(splits[0]["val"]).isdisjoint(splits[1]["val"])  # each member validates on its own fold
    assert sorted(splits[0]["val"] + splits[1]["val"]) == sorted(store.case_ids())
    assert all(set(s["train"]).isdisjoint(s["val"]) for s in splits)
    card = read_card(res.summary["model"])
    assert [(m["name"], m["version"]) for m in card["ensemble"]["members"]] == [("cv-fold0", 1), ("cv-fold1", 1)]
    assert res.summary["folds"] == 2 and "val/dice_mean" in res.summary and "val/dice_mean" in card["metrics"]
    assert [r["fold"] for r in res.tables[0][1]] == [0, 1, "mean"]

    path = write(tmp_path / "case.nii.gz", volume(channels=4))
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--model", res.summary["model"], "--input", str(path), "--out", str(out),
                 "--qa", "off"]) == 0
    like = nib.load(str(path))
    mask = nib.load(str(out))
    assert mask.shape == like.shape[:3] and np.allclose(mask.affine, like.affine)
    predictor = Predictor.from_registry(res.summary["model"], qa="off")
    served, headers, info = http_mask(predictor, path)
    assert info["ensemble"] == ["cv-fold0/1", "cv-fold1/1"] and headers["x-voxray-tta-members"] == "2"
    assert np.array_equal(np.asarray(served.dataobj), np.asarray(mask.dataobj))
    raw = Predictor(predictor.models, {**predictor.card, "postprocess": None}, qa="off")
    probs = predict_images(raw, path, ("mask", "probabilities"))[0].probabilities
    folds = [predict_images(_raw(tmp_path / "reg" / f"cv-fold{k}"), path, ("mask", "probabilities"))[0].probabilities
             for k in (0, 1)]
    assert np.abs(probs - np.mean(folds, axis=0)).max() < 1e-5  # before postprocessing, which follows the mean

    again = runner.run_train(_job(tmp_path))  # finished folds are not retrained; the same ensemble version
    assert again.summary["model"] == res.summary["model"]


def _raw(vdir) -> Predictor:
    """A member as the ensemble runs it: its network without its own largest-component postprocessing (the
    ensemble's card decides that on the averaged probabilities)."""
    model, card = load_model(vdir)
    return Predictor(model, {**card, "postprocess": None}, qa="off")


def test_fold_ensemble_needs_k_fold_validation(tmp_path):
    with pytest.raises(SpecError, match="ensemble folds needs k-fold validation"):
        _job(tmp_path, split=[0.5, 0.5, 0.0])

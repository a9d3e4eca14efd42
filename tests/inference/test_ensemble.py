"""Fold ensembles: the registry entry lists its members, its probabilities are the mean of the members' (a real
equality on the input grid, for softmax and sigmoid tasks), its variance map is the members' disagreement, and a
2-fold ensemble trains from one spec (`train.ensemble: folds`) and predicts through the CLI and HTTP."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from voxray.training.ensemble import export_ensemble, member_dirs
from voxray.training.predict import Predictor, predict_images
from voxray.training.registry import InvalidCard, build_from_card, export_model, load_model, read_card

from _infer_helpers import tiny_card, volume, write


def _members(registry, task: str, n: int = 2, **extra) -> list:
    """`n` tiny UNets with different weights, exported as `ens-fold<k>` (what `train.ensemble: folds` writes)."""
    out = []
    for k in range(n):
        torch.manual_seed(k)
        card = tiny_card(["t1", "t2"], task, restrict_to_nonzero=True, **extra)
        out.append(export_model(build_from_card(card), card, registry, f"ens-fold{k}"))
    return out


@pytest.mark.parametrize("task", ["labels", "brats_regions"])
def test_ensemble_probabilities_are_the_member_mean(tmp_path, task):
    members = _members(tmp_path / "reg", task)
    ens = export_ensemble(members, "ens")
    card = read_card(ens)
    assert [(m["name"], m["version"]) for m in card["ensemble"]["members"]] == [("ens-fold0", 1), ("ens-fold1", 1)]
    assert [str(d) for d in member_dirs(ens, card)] == [str(m) for m in members]
    path = write(tmp_path / "case.nii.gz", volume(channels=2))
    want = ("mask", "probabilities", "uncertainty")
    ensemble, like = predict_images(Predictor.from_registry(ens), path, want)
    single = [predict_images(Predictor.from_registry(m), path, want)[0] for m in members]
    mean = np.mean([p.probabilities for p in single], axis=0)
    assert ensemble.probabilities.shape == single[0].probabilities.shape
    assert np.abs(ensemble.probabilities - mean).max() < 1e-5
    gap = np.abs(single[0].probabilities - single[1].probabilities).max()
    assert gap > 0.05  # the members really differ, so the equality is not trivial
    variance = np.var([p.probabilities for p in single], axis=0).mean(0)  # across members, averaged over classes
    assert len(ensemble.maps) == 2 and np.abs(ensemble.maps[1] - variance).max() < 1e-5 and variance.max() > 1e-3
    assert ensemble.uncertainty["tta_members"] == 2 and ensemble.mask.shape == like.shape[:3]


def test_ensemble_with_tta_counts_every_member_and_keeps_the_tta_variance(tmp_path):
    ens = export_ensemble(_members(tmp_path / "reg", "labels"), "ens")
    path = write(tmp_path / "case.nii.gz", volume(channels=2))
    plain, _ = predict_images(Predictor.from_registry(ens), path, ("mask", "uncertainty"))
    mirrored, _ = predict_images(Predictor.from_registry(ens, tta="mirror"), path, ("mask", "uncertainty"))
    assert mirrored.uncertainty["tta_members"] == 16
    assert mirrored.maps[1].shape == plain.maps[1].shape and not np.allclose(mirrored.maps[1], plain.maps[1])


def test_ensemble_members_must_agree_and_are_not_one_network(tmp_path):
    members = _members(tmp_path / "reg", "labels")
    card = tiny_card(["flair", "t2"])
    other = export_model(build_from_card(card), card, tmp_path / "reg", "other")
    with pytest.raises(InvalidCard, match="disagree on channels"):
        export_ensemble([members[0], other], "bad")
    with pytest.raises(InvalidCard, match="at least 2"):
        export_ensemble(members[:1], "bad")
    ens = export_ensemble(members, "ens")
    assert export_ensemble(members, "ens") == ens  # same members again: the same version, not a copy
    with pytest.raises(InvalidCard, match="ensemble of 2 models"):
        load_model(ens)
    elsewhere = _members(tmp_path / "reg2", "labels", n=1)
    with pytest.raises(InvalidCard, match="must live in the registry"):
        export_ensemble([members[0], elsewhere[0]], "mixed", tmp_path / "reg")


def test_cli_export_ensemble_and_serve_spec_backend(tmp_path):
    from voxray.platform.cli.app import main
    from voxray.platform.specs.loader import validate_job
    from voxray.platform.errors import SpecError
    from voxray.serving.runner import replica_config

    members = _members(tmp_path / "reg", "labels")
    assert main(["export", *map(str, members), "--ensemble", "cli-ens"]) == 0
    assert [m["name"] for m in read_card(tmp_path / "reg" / "cli-ens")["ensemble"]["members"]] == ["ens-fold0",
                                                                                                   "ens-fold1"]
    assert main(["export", str(members[0])]) == 1  # nothing asked: an error, not a silent no-op
    serve = {"model": str(tmp_path / "reg" / "cli-ens"), "api_key_env": None, "allow_anonymous": True,
             "backend": "onnxruntime"}
    job = validate_job({"kind": "serve", "name": "s", "serve": serve})
    assert replica_config(job.serve, host="127.0.0.1").backend == "onnxruntime"
    with pytest.raises(SpecError, match="runs on the CPU"):
        validate_job({"kind": "serve", "name": "s", "serve": {**serve, "use_gpu": True}})
    train = {"store": "s.zarr", "ensemble": "folds", "validation": {"folds": 2}}
    with pytest.raises(SpecError, match="tune first"):
        validate_job({"kind": "tune", "name": "t", "train": train, "tune": {"space": {
            "train.optimizer.lr": {"loguniform": [1e-4, 1e-3]}}}})

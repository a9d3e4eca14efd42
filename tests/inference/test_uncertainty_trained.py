"""Uncertainty means something: a briefly trained model is more uncertain on corrupted inputs than on a held-back
case from its own distribution (predictive entropy score, and TTA member variance under noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import voxray.training.loop as loop
from voxray.preprocessing.datasets import Volume
from voxray.training.checkpoint import load_state
from voxray.training.export import model_card
from voxray.training.predict import Predictor
from voxray.training.uncertainty import case_score, predictive_entropy

from _infer_helpers import train_helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(trained_unet):
    """The session's UNet trained 30 steps on nested-sphere cases whose channels show the classes (a store without
    normalisation or cropping, so a held-back case goes through prediction exactly as training saw it)."""
    t = trained_unet
    model = loop.build_network(t.spec, in_channels=4, out_channels=4)
    model.load_state_dict(load_state(t.checkpoint)["model"])
    return Predictor(model, model_card(t.spec, t.store, t.metrics, {}), tta="mirror"), train_helpers().brats_like_case


def _predict(predictor: Predictor, image: np.ndarray):
    """(C, Z, Y, X) model-grid image → a Volume on an identity affine ((C, X, Y, Z) in file order)."""
    vol = Volume(image=image.transpose(0, 3, 2, 1).copy(), label=None, affine=np.eye(4),
                 channels=tuple(predictor.channels))
    return predictor.predict_full(vol, ("mask", "uncertainty"))


def test_corrupted_inputs_score_higher_than_a_held_back_case(trained):
    predictor, make_case = trained
    image, label = make_case((24, 24, 24), seed=50)  # not among the training cases (seeds 0-5)
    clean = _predict(predictor, image)
    assert (clean.mask.transpose(2, 1, 0) == label).mean() > 0.9  # it did learn the task
    shuffled = _predict(predictor, image[[2, 0, 3, 1]])  # channels in the wrong order
    noisy = _predict(predictor, image + np.random.default_rng(1).normal(0, 2.0, image.shape).astype(np.float32))
    score = {k: p.uncertainty["score"] for k, p in [("clean", clean), ("shuffled", shuffled), ("noisy", noisy)]}
    assert all(p.uncertainty["region"] == "foreground" for p in (clean, shuffled, noisy))
    assert score["shuffled"] > score["clean"] + 0.15 and score["noisy"] > score["clean"] + 0.1, score
    variance = {k: float(p.maps[1].mean()) for k, p in [("clean", clean), ("noisy", noisy)]}
    assert variance["noisy"] > 2 * variance["clean"], variance  # the TTA members disagree more under noise


def test_entropy_and_score_rules():
    certain = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])[:, :, None]  # (K=3, 2, 1)
    even = torch.full((3, 2, 1), 1 / 3)
    assert float(predictive_entropy(certain, "labels").max()) < 1e-4
    assert float(predictive_entropy(even, "labels").min()) == pytest.approx(np.log(3), abs=1e-5)
    assert float(predictive_entropy(torch.full((2, 1, 1), 0.5), "brats_regions")) == pytest.approx(2 * np.log(2))
    logits = torch.tensor([[[9.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 9.0]]])  # (K=2, 2, 2): sure, unsure ×2, sure
    ent = predictive_entropy(torch.softmax(logits, 0), "labels")
    fg = case_score(logits, np.array([[1, 0], [0, 0]]), None, "labels")
    assert fg["region"] == "foreground" and fg["score"] == pytest.approx(float(ent[0, 0]), abs=1e-6) and fg["voxels"] == 1
    body = case_score(logits, np.zeros((2, 2)), np.array([[0, 1], [1, 0]]), "labels")
    assert body["region"] == "body" and body["score"] == pytest.approx(np.log(2), abs=1e-5)
    assert body["max_entropy"] == pytest.approx(np.log(2))

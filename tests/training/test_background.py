"""Background outside the body: on skull-stripped scans (zero outside the brain) a model trained on a
`zscore_nonzero` store predicts no class where every input channel is 0 — in validation and in prediction."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import torch
from torch import nn

import voxray.training.loop as loop
from voxray.platform.specs.train import TrainSpec
from voxray.preprocessing.datasets import get_adapter
from voxray.preprocessing.synth import synth_dataset
from voxray.training.checkpoint import load_state
from voxray.training.export import model_card
from voxray.training.predict import Predictor, predict_files

from _train_helpers import FakeStore

IBSR_META = {**get_adapter("ibsr18").metadata(), "channels": ["t1"]}


class AlwaysGreyMatter(nn.Module):
    """What the review saw on real atlases: grey matter everywhere, empty background included."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros((x.shape[0], 4, *x.shape[2:]))
        logits[:, 2] = 5.0
        return logits


def _card(restrict: bool) -> dict:
    return {"patch": [16, 16, 16], "channels": ["t1"], "task": "labels", "labels": IBSR_META["labels"],
            "preprocess": {"normalize": "zscore_nonzero"}, "restrict_to_nonzero": restrict}


def test_prediction_is_background_wherever_the_scan_is_empty(tmp_path):
    root = synth_dataset("ibsr18", tmp_path / "ibsr", cases=1, seed=0)
    case = get_adapter("ibsr18").discover(root)[0]
    path = case.images["t1"]
    masked = np.asarray(predict_files(Predictor(AlwaysGreyMatter(), _card(True)), path).dataobj)
    empty = (np.asarray(nib.load(path).dataobj) == 0).reshape(masked.shape)
    assert 0.2 < empty.mean() < 0.9  # skull-stripped: a real share of the volume is empty
    assert not masked[empty].any() and (masked[~empty] == 2).all()
    unmasked = np.asarray(predict_files(Predictor(AlwaysGreyMatter(), _card(False)), path).dataobj)
    assert (unmasked[empty] == 2).sum() > 1000  # the defect the card's rule removes (inside the crop box)


def test_trained_tissue_model_card_and_validation_keep_background_empty(tmp_path, monkeypatch):
    """A briefly trained tissue model on a zscore_nonzero store: the card says restrict_to_nonzero, validation
    scores the restricted prediction, and nothing is predicted outside the brain of a held-back scan."""
    from voxray.preprocessing.transforms import TransformConfig, preprocess_volume

    root = synth_dataset("ibsr18", tmp_path / "ibsr", cases=4, seed=0, shape=(32, 24, 32))
    adapter = get_adapter("ibsr18")
    cases = {}
    for c in adapter.discover(root):
        pre = preprocess_volume(adapter.load(c), TransformConfig())
        cases[c.case_id] = (pre.image, pre.label)
    store = FakeStore(cases, IBSR_META)
    store.attrs = {"transform": TransformConfig().to_dict()}
    monkeypatch.setattr(loop, "open_store", lambda uri: store)
    spec = TrainSpec(store="unused", task="labels", model={"name": "unet", "channels": [8, 16], "num_res_units": 0},
                     patch=[16, 16, 16], batch_size=2, steps=20, optimizer={"lr": 1e-2, "weight_decay": 0.0},
                     schedule={"name": "constant"}, validation={"every": 20, "folds": 4, "max_cases": 1},
                     checkpoint={"every": 20}, tracking={"mlflow": False}, augment={"enabled": False},
                     sampling={"loader_workers": 0})
    out = loop.train_loop({"train": spec.model_dump(mode="json"), "name": "bg", "run_dir": str(tmp_path / "run")})
    assert "val/dice_mean" in out and "baseline/dice_mean" in out
    card = model_card(spec, store, out, {})
    assert card["restrict_to_nonzero"] is True
    model = loop.build_network(spec, in_channels=1, out_channels=4)
    model.load_state_dict(load_state(tmp_path / "run" / "checkpoints" / "step_0000020")["model"])
    held = synth_dataset("ibsr18", tmp_path / "held", cases=1, seed=7, shape=(32, 24, 32))
    path = adapter.discover(held)[0].images["t1"]
    mask = np.asarray(predict_files(Predictor(model, card), path).dataobj)
    empty = (np.asarray(nib.load(path).dataobj) == 0).reshape(mask.shape)
    assert not mask[empty].any() and mask[~empty].any()

"""Losses (deep supervision, sigmoid vs softmax), schedules and validation metrics on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxray.platform.specs.train import LossSpec, ScheduleSpec
from voxray.training.losses import build_loss, deep_supervision_weights
from voxray.training.metrics import MetricAccumulator, case_metrics, hd95, lesion_stats
from voxray.training.schedules import lr_factor


def test_warmup_cosine_matches_the_factorizer_recipe():
    spec = ScheduleSpec(name="warmup_cosine", warmup_steps=2000)
    got = [lr_factor(s, spec, 100_000) for s in (0, 1000, 2000, 51_000, 100_000)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0], abs=1e-9)
    assert lr_factor(50, ScheduleSpec(name="poly", power=1.0), 100) == pytest.approx(0.5)
    assert lr_factor(0, ScheduleSpec(name="cosine"), 10) == 1.0


def test_deep_supervision_weights_and_nearest_targets():
    assert deep_supervision_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    loss = build_loss(LossSpec(name="dice_ce"), "brats_regions")
    target = (torch.rand(2, 3, 8, 8, 8) > 0.5).float()
    perfect = [target * 20 - 10, torch.nn.functional.interpolate(target, scale_factor=0.5, mode="nearest") * 20 - 10]
    assert loss(perfect, target).item() < 1e-3
    assert loss([torch.zeros(2, 3, 8, 8, 8), torch.zeros(2, 3, 4, 4, 4)], target).item() > 0.5


@pytest.mark.parametrize("name", ["dice", "ce", "dice_ce", "focal", "dice_focal"])
@pytest.mark.parametrize("task", ["labels", "binary"])
def test_every_loss_trains_downhill(name, task):
    torch.manual_seed(0)
    k = 3 if task == "labels" else 1
    target = torch.randint(0, k, (2, 1, 6, 6)) if task == "labels" else (torch.rand(2, 1, 6, 6) > 0.5).float()
    logits = torch.zeros(2, k, 6, 6, requires_grad=True)
    loss = build_loss(LossSpec(name=name), task)
    first = loss(logits, target)
    first.backward()
    with torch.no_grad():
        logits -= 5 * logits.grad
    assert loss(logits, target).item() < first.item()


def test_metrics_on_known_masks():
    gt = torch.zeros(1, 10, 10, 10)
    gt[0, 2:5, 2:5, 2:5] = 1
    gt[0, 7:9, 7:9, 7:9] = 1  # a second lesion the prediction misses
    logits = torch.full((1, 10, 10, 10), -5.0)
    logits[0, 2:5, 2:5, 2:5] = 5.0
    m = case_metrics(logits, gt, "binary", ["lesion"], [2.0, 1.0, 1.0])
    assert m["dice_lesion"] == pytest.approx(2 * 27 / (27 + 35))
    assert m["abs_volume_diff_ml"] == pytest.approx(8 * 2 / 1000)
    assert m["abs_lesion_count_diff"] == 1 and m["lesion_f1"] == pytest.approx(2 / 3)
    assert m["hd95_lesion"] > 0 and m["pixel_accuracy"] == pytest.approx(1 - 8 / 1000)


def test_empty_cases_and_hd95_conventions():
    empty = torch.zeros(4, 4, 4, dtype=torch.bool)
    full = empty.clone()
    full[1, 1, 1] = True
    assert hd95(empty, empty, [1, 1, 1]) == 0.0
    assert hd95(full, empty, [1, 1, 1]) == pytest.approx(math.sqrt(48))
    m = case_metrics(torch.full((1, 4, 4, 4), -1.0), torch.zeros(1, 4, 4, 4), "binary", ["x"], [1, 1, 1])
    assert m["dice_x"] == 1.0 and m["lesion_f1"] == 1.0


def test_labels_metrics_skip_background_and_accumulate():
    target = torch.tensor([[[0, 1], [2, 2]]])
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1], [2, 1]]), 3).permute(2, 0, 1).float() * 4
    m = case_metrics(logits, target, "labels", ["bg", "a", "b"], [1, 1], hd=False)
    assert "dice_bg" not in m and m["dice_a"] == pytest.approx(2 / 3) and m["dice_b"] == pytest.approx(2 / 3)
    assert m["pixel_accuracy"] == 0.75
    acc = MetricAccumulator()
    acc.add({"dice_mean": 0.5})
    acc.add({"dice_mean": 1.0, "hd95_mean": float("inf")})
    assert acc.aggregate() == {"val/dice_mean": 0.75, "val/hd95_mean": pytest.approx(float("nan"), nan_ok=True)}


def test_lesion_stats_26_connectivity():
    pred = np.zeros((3, 3, 3), bool)
    pred[0, 0, 0] = pred[1, 1, 1] = True  # diagonal neighbours: one lesion under 26-connectivity
    assert lesion_stats(pred, pred) == {"abs_lesion_count_diff": 0.0, "lesion_f1": 1.0}

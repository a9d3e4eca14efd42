"""Tasks: label maps → targets → logits → label maps round-trip in the dataset's own values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxray.training import tasks

MSD = {"labels": {"0": "background", "1": "edema", "2": "non-enhancing", "3": "enhancing"}, "label_encoding": "index",
       "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}, "layout": "msd_brats"}
B23 = {**MSD, "labels": {0: "bg", 1: "NCR", 2: "ED", 3: "ET"}, "regions": {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}}
UW = {"labels": {0: "bg", 1: "large_bowel", 2: "small_bowel", 3: "stomach"}, "label_encoding": "bitmask"}


def _logits_from_target(target: torch.Tensor) -> torch.Tensor:
    return target * 8.0 - 4.0  # 1 → +4, 0 → -4


@pytest.mark.parametrize("meta", [MSD, B23], ids=["msd", "brats2023"])
def test_brats_regions_round_trip(meta):
    label = np.random.default_rng(0).integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    target = tasks.encode_target(label, "brats_regions", meta)
    assert target.shape == (3, 6, 5, 4) and target.dtype == torch.float32
    np.testing.assert_array_equal(target[0].numpy(), label == 3)
    np.testing.assert_array_equal(tasks.decode_logits(_logits_from_target(target), "brats_regions", meta), label)


def test_brats_decode_paints_et_over_everything():
    logits = -torch.ones(3, 2, 2)
    logits[2] = 1  # WT everywhere
    logits[1, 0] = 1  # TC on row 0
    logits[0, 0, 0] = 1  # ET at one voxel
    out = tasks.decode_logits(logits, "brats_regions", MSD)
    assert out.tolist() == [[3, 2], [1, 1]]
    assert tasks.decode_logits(logits, "brats_regions", B23).tolist() == [[3, 1], [2, 2]]


def test_labels_non_contiguous_values():
    meta = {"labels": {0: "bg", 1: "a", 4: "b"}, "label_encoding": "index"}
    label = np.array([[0, 1], [4, 4]], dtype=np.uint8)
    target = tasks.encode_target(label, "labels", meta)
    assert target.dtype == torch.long and target.tolist() == [[[0, 1], [2, 2]]]
    onehot = torch.nn.functional.one_hot(target[0], 3).permute(2, 0, 1).float()
    np.testing.assert_array_equal(tasks.decode_logits(onehot, "labels", meta), label)
    assert tasks.num_outputs("labels", meta) == 3


def test_multilabel_bitmask_round_trip():
    label = np.array([0, 1, 2, 3, 4, 7], dtype=np.uint8)
    target = tasks.encode_target(label, "multilabel", UW)
    assert target.shape == (3, 6)
    assert target[:, 3].tolist() == [1, 1, 0] and target[:, 5].tolist() == [1, 1, 1]
    np.testing.assert_array_equal(tasks.decode_logits(_logits_from_target(target), "multilabel", UW), label)


def test_binary_uses_the_single_lesion_value():
    meta = {"labels": {0: "bg", 255: "tumor"}, "label_encoding": "index"}
    label = np.array([0, 255, 255, 0], dtype=np.uint8)
    target = tasks.encode_target(label, "binary", meta)
    assert target.tolist() == [[0, 1, 1, 0]]
    assert tasks.decode_logits(_logits_from_target(target), "binary", meta).tolist() == [0, 255, 255, 0]
    assert tasks.output_names("binary", meta) == ["tumor"] and tasks.output_names("binary", MSD) == ["foreground"]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="bitmask"):
        tasks.encode_target(np.zeros(3, np.uint8), "labels", UW)
    with pytest.raises(ValueError, match="regions"):
        tasks.num_outputs("brats_regions", UW)
    with pytest.raises(ValueError, match="unknown task"):
        tasks.activation("nope")
    with pytest.raises(ValueError, match="expects 3 channels"):
        tasks.decode_logits(torch.zeros(2, 4), "brats_regions", MSD)

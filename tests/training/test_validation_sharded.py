"""Validation sharded over DDP ranks: two gloo ranks (torch.multiprocessing, in-process) each validate their share
of the cases, and the gathered figures (model and per-voxel baseline) equal a single-rank validation's."""

from __future__ import annotations

import json
import math

import pytest
import torch

from _dist_helpers import SPEC, VAL_CASES, rank_main, validate_all

pytestmark = pytest.mark.slow


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12) for k in a)


def test_two_ranks_equal_one(tmp_path):
    from voxray.platform.specs.train import TrainSpec
    from voxray.training.loop import build_network

    torch.manual_seed(0)
    weights = tmp_path / "weights.pt"
    torch.save(build_network(TrainSpec(**SPEC), in_channels=4, out_channels=3).state_dict(), weights)
    single = validate_all(0, 1, weights)
    assert single["calls"][-1] == (VAL_CASES, VAL_CASES)
    torch.multiprocessing.spawn(rank_main, args=(2, str(tmp_path / "init"), str(weights), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert _same(r["val"], single["val"]), (r["val"], single["val"])
        assert _same(r["baseline"], single["baseline"]), (r["baseline"], single["baseline"])
    # each rank validated only its share (3 + 2 of 5), and drew overlays for its own first cases
    assert [r["calls"][-1] for r in ranks] == [[3, 3], [2, 2]]
    assert ranks[0]["overlays"] == ["step0000000_case02.png", "step0000000_case04.png"]
    assert ranks[1]["overlays"] == ["step0000000_case03.png", "step0000000_case05.png"]
    assert single["val"]["val/dice_mean"] >= 0 and "baseline/dice_mean" in single["baseline"]

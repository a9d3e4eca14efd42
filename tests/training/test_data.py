"""Sampling and loading: fg oversampling, 2D modes, padding, splits, shards, reproducible threaded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxray.platform.errors import DataError
from voxray.platform.specs.train import AugmentSpec, ValidationSpec
from voxray.training.data import PatchBatches, channel_indices, make_split, shard
from voxray.training.sampler import PatchSampler, most_populated_slice, read_patch


def test_fg_fraction_one_always_hits_foreground(fake_store):
    sampler = PatchSampler(fake_store, fake_store.case_ids(), [8, 8, 8], fg_fraction=1.0, seed=1)
    for _ in range(20):
        req = sampler.draw()
        _, label = read_patch(fake_store, req, sampler.box)
        assert label.shape == (8, 8, 8) and label.any()


def test_class_balanced_foreground_reaches_the_rare_class(fake_store):
    sampler = PatchSampler(fake_store, fake_store.case_ids(), [4, 4, 4], fg_fraction=1.0, seed=0)
    hits = sum(bool((read_patch(fake_store, sampler.draw(), sampler.box)[1] == 3).any()) for _ in range(60))
    assert hits >= 15  # ET is ~1% of the voxels but a third of the fg draws


def test_small_volume_is_zero_padded(fake_store):
    sampler = PatchSampler(fake_store, ["case00"], [32, 32, 32], fg_fraction=0.0)
    image, label = read_patch(fake_store, sampler.draw(), sampler.box, channels=[1])
    assert image.shape == (1, 32, 32, 32) and image.dtype == np.float32
    assert (image[:, :4] == 0).all() and label.shape == (32, 32, 32)


def test_2d_most_populated_slice(fake_store):
    lab = fake_store.label("case01")
    expected = int((lab > 0).sum((1, 2)).argmax())
    assert most_populated_slice(fake_store.fg_coords("case01"), lab.shape[0]) == expected
    sampler = PatchSampler(fake_store, ["case01"], [16, 16], slice_mode="most_populated", fg_fraction=0.5)
    assert {sampler.draw().start[0] for _ in range(10)} == {expected}


def test_splits_are_deterministic_and_disjoint():
    ids = [f"c{i}" for i in range(10)]
    a, b = make_split(ids, ValidationSpec(folds=5, fold=2), 0), make_split(ids[::-1], ValidationSpec(folds=5, fold=2), 0)
    assert a == b and len(a["val"]) == 2 and not set(a["val"]) & set(a["train"])
    folds = [set(make_split(ids, ValidationSpec(folds=5, fold=f), 0)["val"]) for f in range(5)]
    assert set().union(*folds) == set(ids)
    fixed = make_split(ids * 1 + [f"d{i}" for i in range(10)], ValidationSpec(split=(0.9, 0.05, 0.05)), 0)
    assert [len(fixed[k]) for k in ("train", "val", "test")] == [18, 1, 1]
    assert shard(["a", "b", "c"], 1, 2) == ["b"] and shard(["a"], 1, 2) == ["a"]
    with pytest.raises(DataError, match="at least 2"):
        make_split(["x"], ValidationSpec(), 0)


def test_channel_subsets():
    assert channel_indices(["FLAIR", "T1w"], ["t1w"]) == [1]
    assert channel_indices(["FLAIR"], None) is None
    with pytest.raises(DataError, match="not in the store"):
        channel_indices(["FLAIR"], ["T2w"])


def _batches(store, workers, **kw):
    return PatchBatches(store, store.case_ids(), patch=[8, 8, 8], batch_size=2, task="brats_regions",
                        meta=store.metadata(), augment=AugmentSpec(affine=0.5, intensity=0.5), workers=workers,
                        seed=3, **kw)


def test_threaded_batches_are_reproducible_and_resumable(fake_store):
    seq = _batches(fake_store, 0)
    ref = [next(seq) for _ in range(4)]
    thr = _batches(fake_store, 2)
    first = next(thr)
    state = thr.state()
    rest = [next(thr) for _ in range(3)]
    for (x, y), (rx, ry) in zip([first, *rest], ref):
        torch.testing.assert_close(x, rx) and torch.testing.assert_close(y, ry)
    assert first[0].shape == (2, 4, 8, 8, 8) and first[1].shape == (2, 3, 8, 8, 8)
    again = _batches(fake_store, 2)
    again.set_state(state)
    torch.testing.assert_close(next(again)[0], ref[1][0])
    for b in (seq, thr, again):
        b.close()


def test_2d_batches_with_label_targets(fake_store):
    b = PatchBatches(fake_store, fake_store.case_ids(), patch=[16, 16], batch_size=3, task="labels",
                     meta=fake_store.metadata(), channels=[0, 2], workers=1)
    x, y = next(b)
    assert x.shape == (3, 2, 16, 16) and y.shape == (3, 1, 16, 16) and y.dtype == torch.long
    b.close()


def test_loader_threads_run_torch_single_threaded_and_leave_the_caller_alone(fake_store):
    import threading

    import torch

    from voxray.training.data import _serial_pool

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = _serial_pool(2)
        seen = {pool.submit(lambda: (threading.get_ident(), torch.get_num_threads())).result() for _ in range(8)}
        pool.shutdown()
        assert {n for _, n in seen} == {1}
        assert torch.get_num_threads() == 2
        fresh = []
        t = threading.Thread(target=lambda: fresh.append(torch.get_num_threads()))
        t.start(), t.join()
        assert fresh == [2]  # threads started later get the caller's setting back
    finally:
        torch.set_num_threads(before)

"""Labels handled honestly: splits hold labelled cases only (one warning names the rest), a single labelled case
trains (validation none / on the training case, said so in metrics and logs), store-only checks fail before Ray."""

from __future__ import annotations

import json
import logging

import pytest

import voxray.training.loop as loop
import voxray.training.runner as runner
from voxray.platform.errors import DataError
from voxray.platform.specs.loader import validate_job
from voxray.platform.specs.train import TrainSpec, ValidationSpec
from voxray.training.data import load_or_make_split, make_split
from voxray.training.registry import read_card
from voxray.training.validation import ON_TRAINING_DATA

from _train_helpers import make_fake_store, val_curve

TRAIN = dict(task="brats_regions", model={"name": "unet", "channels": [8, 16], "num_res_units": 1},
             patch=[16, 16, 16], batch_size=2, steps=4, optimizer={"lr": 3e-3, "weight_decay": 0.0},
             schedule={"name": "constant"}, checkpoint={"every": 2}, tracking={"mlflow": False},
             augment={"enabled": False}, sampling={"loader_workers": 0, "fg_fraction": 0.5})


def _spec(validation: dict, **kw) -> TrainSpec:
    return TrainSpec(store="unused", **{**TRAIN, "validation": {"every": 2, "max_cases": 1, **validation}, **kw})


def _loop(spec: TrainSpec, run_dir) -> dict:
    return loop.train_loop({"train": spec.model_dump(mode="json"), "name": "t", "run_dir": str(run_dir)})


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "unlabelled" in r.getMessage()]


def test_unlabelled_cases_never_enter_the_split_and_are_named_once(tmp_path, monkeypatch, caplog):
    store = make_fake_store(4, shape=(16, 16, 16), unlabelled=3)
    monkeypatch.setattr(loop, "open_store", lambda uri: store)
    caplog.set_level(logging.WARNING)
    out = _loop(_spec({"folds": 2}, steps=2), tmp_path)
    split = json.loads((tmp_path / "split.json").read_text())
    used = set(split["train"]) | set(split["val"]) | set(split["test"])
    assert used == {"case00", "case01", "case02", "case03"} and out["step"] == 2
    (line,) = _warnings(caplog)
    assert "3 unlabelled case(s)" in line and all(f"test0{i}" in line for i in range(3))
    load_or_make_split(tmp_path / "split.json", store, ValidationSpec(folds=2), 0)  # a resumed run: no new warning
    assert len(_warnings(caplog)) == 1


def test_split_modes_for_one_or_few_labelled_cases():
    assert make_split(["a"], ValidationSpec(mode="train_cases"), 0) == {"train": ["a"], "val": ["a"], "test": []}
    assert make_split(["a", "b"], ValidationSpec(mode="none"), 0) == {"train": ["a", "b"], "val": [], "test": []}
    with pytest.raises(DataError, match="folds=5 is more than the labelled cases"):
        make_split(["a", "b", "c"], ValidationSpec(folds=5), 0)
    with pytest.raises(DataError, match="0 labelled cases"):
        make_split([], ValidationSpec(mode="none"), 0)
    assert TrainSpec(validation={"mode": "none"}).checkpoint.metric == "train/loss"
    with pytest.raises(ValueError, match="needs validation"):
        TrainSpec(validation={"mode": "none"}, checkpoint={"metric": "val/dice_mean"})


def test_single_labelled_case_trains_without_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "open_store", lambda uri: make_fake_store(1, shape=(16, 16, 16), unlabelled=1))
    spec = _spec({"mode": "none"})
    assert (spec.checkpoint.metric, spec.checkpoint.mode) == ("train/loss", "min")
    out = _loop(spec, tmp_path)
    assert out["step"] == 4 and out["train/loss"] > 0 and not [k for k in out if k.startswith("val/")]
    assert json.loads((tmp_path / "split.json").read_text()) == {"train": ["case00"], "val": [], "test": []}
    assert not (tmp_path / "overlays").exists()
    ranked = [json.loads((p / "metrics.json").read_text())["train/loss"]
              for p in sorted((tmp_path / "checkpoints").iterdir())]
    assert ranked and all(v > 0 for v in ranked)


def test_single_labelled_case_validates_on_itself_and_says_so(tmp_path, monkeypatch, caplog):
    """Through run_train (no Ray: num_workers 0): summary, result.json and the model card carry the flag."""
    monkeypatch.setattr(runner, "open_store", lambda uri: make_fake_store(1, shape=(16, 16, 16)))
    monkeypatch.setattr(loop, "open_store", lambda uri: make_fake_store(1, shape=(16, 16, 16)))
    job = validate_job({"kind": "train", "name": "one", "train": {
        **TRAIN, "store": str(tmp_path / "s.zarr"), "steps": 60, "optimizer": {"lr": 1e-2, "weight_decay": 0.0},
        "checkpoint": {"every": 60}, "validation": {"mode": "train_cases", "every": 60, "at_start": True},
        "scaling": {"num_workers": 0}, "output": str(tmp_path / "runs"), "registry": str(tmp_path / "reg")}})
    caplog.set_level(logging.WARNING)
    res = runner.run_train(job)
    curve = val_curve(tmp_path / "runs" / "one")
    assert res.summary[ON_TRAINING_DATA] is True and curve[60] >= curve[0] + 0.3, curve  # it fits its one case
    assert res.tables[0][0] == "validation ON THE TRAINING CASES"
    assert any("on the TRAINING cases" in r.getMessage() for r in caplog.records)
    assert read_card(tmp_path / "reg" / "one")["metrics"][ON_TRAINING_DATA] == 1.0
    assert json.loads((tmp_path / "runs" / "one" / "result.json").read_text())["summary"][ON_TRAINING_DATA] is True


def _fail_ray_init(*a, **k):
    raise AssertionError("Ray must not start when the store alone shows the job cannot run")


@pytest.mark.parametrize("labelled, unlabelled, validation, match", [
    (1, 2, {}, r"1 labelled case \(2 unlabelled, not used\).*at least 2"),
    (3, 0, {"folds": 5}, "folds=5 is more than the labelled cases"),
    (0, 2, {"mode": "none"}, "cannot train: the store .* has 0 labelled cases"),
])
def test_store_checks_run_before_ray_starts(tmp_path, monkeypatch, labelled, unlabelled, validation, match):
    import ray

    import voxray.platform.stages as stages

    store = make_fake_store(labelled, shape=(16, 16, 16), unlabelled=unlabelled)
    monkeypatch.setattr(runner, "open_store", lambda uri: store)
    monkeypatch.setattr(ray, "init", _fail_ray_init)
    monkeypatch.setattr(stages, "ray_runtime", _fail_ray_init)  # also when a session-wide Ray is already up
    was_up = ray.is_initialized()
    job = validate_job({"kind": "train", "name": "few", "train": {
        **TRAIN, "store": str(tmp_path / "few.zarr"), "validation": validation, "output": str(tmp_path / "runs")}})
    with pytest.raises(DataError, match=match) as err:
        stages.run_job(job)
    assert "few.zarr" in str(err.value) and err.value.hint
    assert ray.is_initialized() == was_up and not (tmp_path / "runs").exists()

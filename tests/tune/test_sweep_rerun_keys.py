"""What decides whether a sweep dir is resumed: the same spec and store data → resume; other store data → the old
experiment and trials are cleared and the sweep starts over (logged); another spec → refused (no Ray needed)."""

from __future__ import annotations

import json
import logging

import pytest

from voxray.platform.errors import VoxrayError
from voxray.platform.specs.loader import validate_job
from voxray.training.rundir import RunDir, data_changes
from voxray.training.tune.runner import FINGERPRINT, _fingerprint, _same_sweep

DATA = {"hash": "aaaa", "cases": {"c1": "x1", "c2": "x2"}}


def _job(tmp_path, lr_high: float = 1e-2):
    return validate_job({"kind": "tune", "name": "keys", "train": {
        "store": str(tmp_path / "s.zarr"), "task": "brats_regions", "model": {"name": "unet", "channels": [4, 8]},
        "patch": [16, 16, 16], "output": str(tmp_path / "runs")},
        "tune": {"space": {"train.optimizer.lr": {"loguniform": [1e-4, lr_high]}}, "output": str(tmp_path / "tune")}},
        base_dir=tmp_path)


def _sweep(tmp_path, job, data) -> RunDir:
    root = RunDir.of(job.tune.output, job.name)
    for folder in ("experiment", "trials/t1"):
        (root.local / folder).mkdir(parents=True)
    root.write_text(FINGERPRINT, json.dumps({"fingerprint": _fingerprint(job), "data": data}))
    return root


def test_same_spec_and_data_resumes(tmp_path):
    job = _job(tmp_path)
    root = _sweep(tmp_path, job, DATA)
    assert _same_sweep(root, job, DATA) and (root.local / "experiment").is_dir()


def test_changed_store_starts_over_and_says_why(tmp_path, caplog):
    job = _job(tmp_path)
    root = _sweep(tmp_path, job, DATA)
    new = {"hash": "bbbb", "cases": {"c1": "x1", "c2": "CHANGED", "c3": "x3"}}
    with caplog.at_level(logging.WARNING):
        assert not _same_sweep(root, job, new)
    assert "1 case added (c3), 1 case changed (c2)" in caplog.text and "starting the sweep over" in caplog.text
    assert not (root.local / "experiment").exists() and not (root.local / "trials").exists()


def test_changed_spec_is_refused(tmp_path):
    root = _sweep(tmp_path, _job(tmp_path), DATA)
    with pytest.raises(VoxrayError, match="different train/tune spec"):
        _same_sweep(root, _job(tmp_path, lr_high=5e-2), DATA)


def test_data_changes_wording():
    assert data_changes(None, DATA) is None and data_changes(DATA, dict(DATA)) is None
    removed = data_changes(DATA, {"hash": "c", "cases": {"c1": "x1"}})
    assert removed == "1 case removed (c2)"

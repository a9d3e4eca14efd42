"""Reruns that notice changed data, with every artefact on S3: a pipeline rerun after the dataset gained a case
converts only that case and retrains (the log says why), exporting a new model version; an unchanged rerun does
neither. Training runs in-process (`num_workers: 0`), so this also covers the mirrored local checkpoints."""

from __future__ import annotations

import logging

import pytest

from voxray.platform.specs.loader import validate_job

pytestmark = pytest.mark.slow


def _job(dataset, bucket: str, base, cases: int):
    return validate_job({"kind": "pipeline", "name": "rerun", "ray": {"num_cpus": 2}, "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(dataset)}, "store": f"{bucket}/brats.zarr",
        "chunk": [16, 16, 16], "max_cases": cases, "memory_per_case_mb": 256},
        "train": {"task": "brats_regions", "model": {"name": "unet", "channels": [4, 8], "num_res_units": 0},
                  "patch": [16, 16, 16], "batch_size": 1, "steps": 3, "schedule": {"name": "constant"},
                  "validation": {"every": 3, "folds": 2, "max_cases": 1}, "checkpoint": {"every": 3},
                  "scaling": {"num_workers": 0}, "sampling": {"loader_workers": 0}, "augment": {"enabled": False},
                  "tracking": {"mlflow": False}, "output": f"{bucket}/runs", "registry": f"{bucket}/registry"}},
        base_dir=base)


def test_store_change_retrains_on_pipeline_rerun(ray_session, s3_bucket, tmp_path, caplog):
    from voxray.platform.stages import run_job
    from voxray.preprocessing.synth import synth_dataset
    from voxray.training.registry import list_versions
    from voxray.training.rundir import RunDir

    data = synth_dataset("msd_brats", tmp_path / "msd", cases=4, seed=2, shape=(24, 24, 16))
    first = run_job(_job(data, s3_bucket, tmp_path, cases=3))
    assert first.ok and first.summary["train.model"] == f"{s3_bucket}/registry/rerun/1"
    run = RunDir.of(f"{s3_bucket}/runs", "rerun")
    assert run.read_json("data.json")["cases"].keys() == {"BRATS_001", "BRATS_002", "BRATS_003"}
    caplog.set_level(logging.INFO)
    same = run_job(_job(data, s3_bucket, tmp_path, cases=3))
    assert same.ok and same.summary["preprocess.cases_converted"] == 0
    assert "already finished (same spec, same store data" in caplog.text
    assert list_versions(f"{s3_bucket}/registry/rerun") == [1]
    caplog.clear()
    grown = run_job(_job(data, s3_bucket, tmp_path, cases=4))  # the dataset gained a case
    assert grown.ok and grown.summary["preprocess.cases_converted"] == 1
    assert "the store changed since (1 case added (BRATS_004)); training again" in caplog.text
    assert "training from scratch on the new data" in caplog.text
    assert grown.summary["train.model"] == f"{s3_bucket}/registry/rerun/2"
    assert list_versions(f"{s3_bucket}/registry/rerun") == [1, 2]
    assert "BRATS_004" in run.read_json("data.json")["cases"]
    assert run.read_json("result.json")["data"]["hash"] == run.read_json("data.json")["hash"]
    from voxray.platform import storage

    assert storage.glob(f"{s3_bucket}/runs/rerun/checkpoints/step_*/state.pt")  # mirrored from the local loop

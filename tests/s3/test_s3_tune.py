"""A sweep with everything on S3: Tune's experiment state, each trial's Train checkpoints, the results tables and
the best model (exported to an s3:// registry); a rerun restores the finished sweep from S3 and adds no version."""

from __future__ import annotations

import io
import logging

import pyarrow.parquet as pq
import pytest

from voxray.platform.specs.loader import validate_job

pytestmark = pytest.mark.slow
NAME = "s3-sweep"


def _job(data, bucket: str, base):
    return validate_job({
        "kind": "pipeline", "name": NAME, "ray": {"num_cpus": 2},
        "preprocess": {"dataset": {"layout": "msd_brats", "root": str(data)}, "store": f"{bucket}/store.zarr",
                       "chunk": [16, 16, 16], "memory_per_case_mb": 256},
        "train": {"task": "labels", "model": {"name": "unet_depth", "depth": 2, "base_channels": 4},
                  "patch": [16, 16], "batch_size": 2, "steps": 4, "schedule": {"name": "constant"},
                  "sampling": {"loader_workers": 0, "slice_mode": "most_populated"}, "augment": {"enabled": False},
                  "validation": {"every": 2, "folds": 2, "max_cases": 1}, "checkpoint": {"every": 2, "keep": 1},
                  "scaling": {"num_workers": 1, "cpus_per_worker": 0.5}, "tracking": {"mlflow": False},
                  "output": f"{bucket}/runs", "registry": f"{bucket}/registry"},
        "tune": {"space": {"train.optimizer.lr": {"grid": [1.0e-3, 1.0e-2]}}, "num_samples": 1, "max_concurrent": 2,
                 "search": "grid", "metric": "val/dice_mean", "mode": "max", "scheduler": {"name": "fifo"},
                 "output": f"{bucket}/tune"}}, base_dir=base)


def test_sweep_on_s3(ray_session, s3_bucket, tmp_path, caplog):
    from voxray.platform import storage
    from voxray.platform.stages import run_job
    from voxray.preprocessing.synth import synth_dataset
    from voxray.training.registry import list_entries, list_versions, read_card

    data = synth_dataset("msd_brats", tmp_path / "msd", cases=3, seed=5, shape=(24, 24, 16))
    res = run_job(_job(data, s3_bucket, tmp_path))
    assert res.ok, res.message
    sweep = f"{s3_bucket}/tune/{NAME}"
    assert res.summary["tune.model"] == f"{s3_bucket}/registry/{NAME}/1"
    assert res.summary["tune.results"] == f"{sweep}/tune_results.csv"
    table = pq.read_table(io.BytesIO(storage.read_bytes(f"{sweep}/tune_results.parquet")))
    assert table.num_rows == 2 and set(table.column("status").to_pylist()) == {"TERMINATED"}
    for name in ("sweep.json", "best_train.yaml", "summary.json", "job.resolved.yaml", "metric_vs_step.png"):
        assert storage.exists(f"{sweep}/{name}"), name
    assert storage.glob(f"{sweep}/experiment/*/result.json")  # Tune's own state
    assert len({u.split("/trials/")[1].split("/")[0] for u in
                storage.glob(f"{sweep}/trials/*/ray/*/checkpoint_*/state.pt")}) == 2  # each trial's checkpoints
    card = read_card(f"{s3_bucket}/registry/{NAME}")
    entries = list_entries(f"{s3_bucket}/registry")  # what `voxray models ls s3://…/registry` prints
    assert [(e["name"], e["version"], e["path"]) for e in entries] == [(NAME, 1, f"{s3_bucket}/registry/{NAME}/1")]
    assert card["source"]["checkpoint"].startswith(f"{sweep}/trials/") and card["source"]["tune_dir"] == sweep
    caplog.set_level(logging.INFO)
    again = run_job(_job(data, s3_bucket, tmp_path))
    assert again.ok and again.summary["tune.restored"] is True and "restoring the sweep" in caplog.text
    assert again.summary["tune.model"] == res.summary["tune.model"] and list_versions(f"{s3_bucket}/registry/{NAME}") == [1]

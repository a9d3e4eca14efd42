"""`kind: plan`: `voxray plan` as a job spec — validated like every job, run by `voxray run`, writing a planned job
that itself validates and trains (smoke size)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxray.platform.cli.app import main
from voxray.platform.errors import SpecError
from voxray.platform.specs.loader import load_job, validate_job

SMOKE = ["train.steps=2", "train.validation.every=2", "train.validation.max_cases=1", "train.checkpoint.every=2",
         "train.scaling.num_workers=0", "train.sampling.loader_workers=0", "train.tracking.mlflow=false",
         "preprocess.memory_per_case_mb=64"]


def test_plan_job_needs_exactly_one_source(tmp_path):
    base = {"kind": "plan", "name": "p", "plan": {"out": "jobs/p.yaml"}}
    with pytest.raises(SpecError, match="exactly one of `dataset` and `store`, got neither"):
        validate_job(base)
    both = {**base, "plan": {**base["plan"], "store": "s.zarr", "dataset": {"layout": "ibsr18", "root": "d"}}}
    with pytest.raises(SpecError, match="got both"):
        validate_job(both)
    with pytest.raises(SpecError, match=r"plan\.memory_gb: .*greater than 0"):
        validate_job({**base, "plan": {**base["plan"], "store": "s.zarr", "memory_gb": 0}})
    with pytest.raises(SpecError, match=r"plan\.modalities\.t1"):
        validate_job({**base, "plan": {**base["plan"], "store": "s.zarr", "modalities": {"t1": "PET"}}})


def test_plan_job_writes_a_job_that_trains(tmp_path, ray_session):
    import torch

    from voxray.platform.stages import run_job
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset("msd_brats", tmp_path / "data" / "brats", cases=3, shape=(24, 24, 16))
    spec = tmp_path / "plan.yaml"
    spec.write_text(yaml.safe_dump({"kind": "plan", "name": "brats-plan", "plan": {
        "dataset": {"layout": "msd_brats", "root": "data/brats"}, "out": "jobs/brats.yaml", "memory_gb": 0.5,
        "steps": 2, "device": "cpu", "job_name": "brats-planned"}}))
    assert main(["validate", str(spec)]) == 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_job(load_job(spec))
        assert result.ok and result.summary["planned_kind"] == "pipeline" and result.summary["steps"] == 2
        out = tmp_path / "jobs" / "brats.yaml"
        data = yaml.safe_load(out.read_text())
        assert data["name"] == "brats-planned" and data["train"]["task"] == "brats_regions"
        assert (out.parent / data["preprocess"]["dataset"]["root"]).resolve() == (tmp_path / "data" / "brats").resolve()
        assert result.summary["patch"] == data["train"]["patch"]
        job = load_job(out, SMOKE + [f"train.output={tmp_path / 'runs'}", f"train.registry={tmp_path / 'reg'}"])
        trained = run_job(job)
    finally:
        torch.set_num_threads(threads)
    assert trained.ok, trained.message
    assert Path(trained.summary["train.model"]).is_dir() and "train.val/dice_mean" in trained.summary

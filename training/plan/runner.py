"""A `plan` spec section → fingerprint → plan → the job YAML at `plan.out`: one code path for the `voxray plan` verb
and the `kind: plan` job."""

from __future__ import annotations

from pathlib import Path

from voxray.platform.specs.plan import PlanSpec
from voxray.platform.stages import StageResult
from voxray.training.plan.fingerprint import dataset_fingerprint, fingerprint_for
from voxray.training.plan.recipe import Plan, PlanOptions, make_plan

__all__ = ["write_plan", "run_plan"]


def write_plan(spec: PlanSpec, name: str | None = None) -> Plan:
    """Plan from `spec.dataset` or `spec.store` and write the YAML to `spec.out`; `name` names the planned job when
    `spec.job_name` does not (None: `<layout>-plan`)."""
    modalities = dict(spec.modalities)
    if spec.store is not None:
        fp = fingerprint_for(spec.store, None)  # names the path when it holds no fingerprint.json
    else:
        fp = dataset_fingerprint(spec.dataset, modalities, spec.intensity_cases)
    opts = PlanOptions(model=spec.model, memory_gb=spec.memory_gb, hours=spec.hours, steps=spec.steps,
                       step_seconds=spec.step_seconds, device=spec.device,
                       anisotropy_threshold=spec.anisotropy_threshold, modalities=modalities,
                       name=spec.job_name or name, store=spec.planned_store, workers=spec.workers)
    out = Path(spec.out)
    plan = make_plan(fp, opts, out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plan.yaml())
    return plan


def run_plan(job) -> StageResult:
    """The `plan` kind's stage runner: writes the planned job and reports its headline decisions."""
    plan = write_plan(job.plan, job.name)
    d = plan.details
    return StageResult(kind="plan", summary={
        "out": job.plan.out, "planned_kind": plan.kind, "model": d["family"], "patch": d["patch"],
        "batch_size": d["batch_size"], "steps": d["steps"], "step_seconds": round(d["step_seconds"], 4),
        "estimated_gib": round(d["estimated_bytes"] / 2**30, 3), "resampling": d["resampling"]["scheme"],
        "device": d["device"]})

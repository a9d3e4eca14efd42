"""The `plan` section: a dataset or a store → a planned `pipeline`/`train` job YAML (`voxray plan` as a job kind,
so a plan can be versioned, validated and submitted to a cluster like any other job; docs/plan.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxray.platform.specs.common import ArtifactPath, StrictModel
from voxray.platform.specs.preprocess import DatasetSpec


class PlanSpec(StrictModel):
    dataset: DatasetSpec | None = None
    """Dataset to plan from (geometry from the headers); exactly one of `dataset` and `store`."""
    store: ArtifactPath | None = None
    """A store made by `preprocess` to plan from (its fingerprint.json); exactly one of `dataset` and `store`."""
    out: ArtifactPath
    """Where the planned job YAML is written (its relative paths resolve against this file's folder)."""
    model: Literal["auto", "unet", "swin_factorizer"] = "auto"
    """auto (default) = swin_factorizer where its divisibility/anisotropy rules fit the data, else unet."""
    memory_gb: float = Field(default=16.0, gt=0)
    """Accelerator memory per worker in GiB (default 16); 15 % is kept free."""
    hours: float = Field(default=24.0, gt=0)
    """Training compute budget in hours (default 24); sets the step count from the measured step time."""
    steps: int | None = Field(default=None, ge=1)
    """Fixed step count instead of one derived from `hours`; null (default) = derived."""
    step_seconds: float | None = Field(default=None, gt=0)
    """Seconds per step on the target machine when planning elsewhere; null (default) = measured here."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where memory and step time are measured (default auto: CUDA when present, else CPU)."""
    anisotropy_threshold: float = Field(default=3.0, gt=1)
    """Spacing ratio above which a grid counts as anisotropic (default 3, nnU-Net's)."""
    modalities: dict[str, Literal["CT", "MR"]] = {}
    """Channel → CT or MR where the channel name does not say (default: from the name)."""
    intensity_cases: int | None = Field(default=None, ge=0)
    """Cases decoded for intensity statistics; null (default) = 10 for CT channels, none for MR."""
    job_name: str | None = None
    """Name of the planned job; null (default) = this job's name."""
    planned_store: ArtifactPath | None = None
    """Store the planned preprocess stage writes; null (default) = work/<job_name>.zarr next to `out`."""
    workers: int = Field(default=1, ge=1)
    """Training workers (DDP ranks) the plan is made for (default 1)."""

    @model_validator(mode="after")
    def _one_source(self) -> "PlanSpec":
        if (self.dataset is None) == (self.store is None):
            given = "both" if self.dataset is not None else "neither"
            raise ValueError(f"plan needs exactly one of `dataset` and `store`, got {given} "
                             "(e.g. dataset: {layout: msd_brats, root: data/msd_brats})")
        return self

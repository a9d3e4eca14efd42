"""The job spec: a `kind`-discriminated union over the job kinds."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, TypeAdapter, field_validator, model_validator

from voxray.platform.specs.common import RaySpec, StrictModel
from voxray.platform.specs.plan import PlanSpec
from voxray.platform.specs.preprocess import PreprocessSpec
from voxray.platform.specs.serve import ServeSpec
from voxray.platform.specs.train import TrainSpec
from voxray.platform.specs.tune import TuneSpec

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class _JobBase(StrictModel):
    name: str
    """Job name: lower-case letters, digits, `.`, `_`, `-`; names the run dir and registry entry."""
    ray: RaySpec = RaySpec()
    """Where to run: embedded local Ray (default) or a cluster."""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name {v!r} must match {_NAME.pattern} (e.g. 'brats-factorizer')")
        return v


class PreprocessJob(_JobBase):
    kind: Literal["preprocess"] = "preprocess"
    preprocess: PreprocessSpec


class TrainJob(_JobBase):
    kind: Literal["train"] = "train"
    train: TrainSpec

    @model_validator(mode="after")
    def _store_given(self) -> "TrainJob":
        if self.train.store is None:
            raise ValueError("train.store is required for a `train` job (only a pipeline fills it from preprocess)")
        return self


def _tune_metric_measured(train: TrainSpec | None, tune: TuneSpec | None) -> None:
    """A sweep ranked by a `val/` metric needs trials that validate."""
    if train is not None and tune is not None and train.validation.mode == "none" and tune.metric.startswith("val/"):
        raise ValueError(f"tune.metric {tune.metric!r} needs validation, but train.validation.mode is none")
    if train is not None and tune is not None and train.ensemble != "none":
        raise ValueError(f"train.ensemble {train.ensemble!r} trains every fold of one recipe; a sweep trains many "
                         "recipes: tune first, then train the best spec with ensemble: folds")


class TuneJob(_JobBase):
    kind: Literal["tune"] = "tune"
    train: TrainSpec
    """The base train spec every trial starts from."""
    tune: TuneSpec

    @model_validator(mode="after")
    def _metric_measured(self) -> "TuneJob":
        _tune_metric_measured(self.train, self.tune)
        return self


class ServeJob(_JobBase):
    kind: Literal["serve"] = "serve"
    serve: ServeSpec


class PlanJob(_JobBase):
    kind: Literal["plan"] = "plan"
    plan: PlanSpec
    """Derive a training recipe from the data and write it to `plan.out` (`voxray plan` as a job)."""


class PipelineJob(_JobBase):
    kind: Literal["pipeline"] = "pipeline"
    preprocess: PreprocessSpec | None = None
    """Stage 1 (optional): build the store."""
    train: TrainSpec | None = None
    """Stage 2: train (or the base spec of the sweep when `tune` is given)."""
    tune: TuneSpec | None = None
    """Stage 2' (optional): sweep instead of a single training run; the best model is exported."""
    serve: ServeSpec | None = None
    """Stage 3 (optional): serve the exported model (its `model` defaults to the pipeline's registry entry)."""

    @model_validator(mode="before")
    @classmethod
    def _serve_model_optional(cls, data: Any) -> Any:
        # In a pipeline the served model is the one the pipeline exports; let users omit it.
        if isinstance(data, dict) and isinstance(data.get("serve"), dict) and "model" not in data["serve"]:
            data = {**data, "serve": {**data["serve"], "model": "__pipeline__"}}
        return data

    @model_validator(mode="after")
    def _stages_chain(self) -> "PipelineJob":
        if self.tune is not None and self.train is None:
            raise ValueError("tune needs a `train` section: it is the base spec of every trial")
        if not any((self.preprocess, self.train, self.serve)):
            raise ValueError("a pipeline needs at least one of preprocess, train, tune, serve")
        if self.train is not None and self.train.store is None and self.preprocess is None:
            raise ValueError("train.store is required when the pipeline has no preprocess stage")
        if self.serve is not None and self.serve.model.endswith("__pipeline__") and self.train is None:
            raise ValueError("serve.model is required when the pipeline has no train/tune stage")
        _tune_metric_measured(self.train, self.tune)
        return self


JobSpec = Annotated[Union[PreprocessJob, TrainJob, TuneJob, ServeJob, PipelineJob, PlanJob], Discriminator("kind")]
KINDS = ("preprocess", "train", "tune", "serve", "pipeline", "plan")
JOB_ADAPTER: TypeAdapter = TypeAdapter(JobSpec)


def job_json_schema(kind: str | None = None) -> dict:
    """JSON Schema of the job spec (all kinds, or one), for editors' YAML completion."""
    if kind is None:
        schema = JOB_ADAPTER.json_schema()
        schema["title"] = "voxray job"
        return schema
    models = {"preprocess": PreprocessJob, "train": TrainJob, "tune": TuneJob, "serve": ServeJob,
              "pipeline": PipelineJob, "plan": PlanJob}
    if kind not in models:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return models[kind].model_json_schema()


__all__ = ["JobSpec", "KINDS", "JOB_ADAPTER", "PreprocessJob", "TrainJob", "TuneJob", "ServeJob", "PipelineJob",
           "PlanJob", "job_json_schema"]

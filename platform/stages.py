"""Job kind → stage runner. Stage packages register by module path; a missing stage is a clear error, never a no-op.

Runner contract: `runner(job) -> StageResult`, called with Ray already initialised (by `run_job`); runners never
start or stop Ray themselves, so a pipeline runs every stage on one Ray.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from voxray.platform.errors import StageUnavailable
from voxray.platform.runtime import ray_runtime
from voxray.platform.specs import JobSpec

RUNNERS: dict[str, str] = {
    "preprocess": "voxray.preprocessing.runner:run_preprocess",
    "train": "voxray.training.runner:run_train",
    "tune": "voxray.training.tune.runner:run_tune",
    "serve": "voxray.serving.runner:run_serve",
    "pipeline": "voxray.platform.pipeline:run_pipeline",
    "plan": "voxray.training.plan.runner:run_plan",
}


PREFLIGHTS: dict[str, str] = {
    "train": "voxray.training.runner:preflight",
    "tune": "voxray.training.runner:preflight",
    "pipeline": "voxray.training.runner:preflight",
}
"""Checks that need only the job and its inputs, run before Ray starts: `preflight(job)` raises or returns None."""


@dataclass
class StageResult:
    """What a stage produced: `summary` (artefact paths, headline figures) and extra tables for the CLI."""

    kind: str
    ok: bool = True
    summary: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    message: str | None = None
    """Why the stage is not ok (printed as the error)."""


def get_runner(kind: str) -> Callable[[JobSpec], StageResult]:
    target = RUNNERS.get(kind)
    if target is None:
        raise StageUnavailable(f"unknown job kind {kind!r}; expected one of {', '.join(RUNNERS)}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StageUnavailable(f"the {kind!r} stage is not available in this voxray build ({module_name} is missing)",
                                   hint="upgrade voxray, or run a job of another kind") from None
        raise
    return getattr(module, attr)


def preflight(job: JobSpec) -> None:
    """The kind's pre-Ray checks (see PREFLIGHTS); a kind whose stage is not installed has none."""
    target = PREFLIGHTS.get(job.kind)
    if target is None:
        return
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return  # the stage is not in this build: get_runner reports it
        raise
    getattr(module, attr)(job)


def run_job(job: JobSpec, *, address: str | None = None) -> StageResult:
    """Run one job on an embedded or remote Ray, dispatching by kind; storage and store-only checks run before Ray
    starts (a missing bucket or refused credentials fail in a second, naming the field and the URI)."""
    from voxray.platform.storage import check_storage

    runner = get_runner(job.kind)
    check_storage(job)
    preflight(job)
    with ray_runtime(job.ray, address):
        return runner(job)


def job_dir(root: str | Path, name: str) -> Path:
    """The conventional per-job folder under an artefact root."""
    return Path(root) / name

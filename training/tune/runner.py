"""`run_tune(job)`: validate the space, run (or resume) the Tune sweep of Ray Train trials, then report.

The sweep lives in `<tune.output>/<job name>/`: `experiment/` (Tune's state, one folder per trial), `trials/<id>/`
(each trial's Train run: metrics.csv, checkpoints), `sweep.json` (spec fingerprint), the results tables, plots,
`best_train.yaml` and `mlflow.db`. Rerunning the same job after the driver died resumes the sweep with
`Tuner.restore`: finished trials are kept, interrupted ones resume from their own Train checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from voxray.platform.errors import SpecError, VoxrayError
from voxray.platform.specs.job import TuneJob
from voxray.platform.specs.loader import write_resolved
from voxray.platform.stages import StageResult
from voxray.training.tune.driver import run_trial
from voxray.training.tune.report import report_sweep
from voxray.training.tune.search import build_scheduler, build_search
from voxray.training.tune.space import SearchSpace, check_space

log = logging.getLogger(__name__)

EXPERIMENT = "experiment"
FINGERPRINT = "sweep.json"


def sweep_dir(job: TuneJob) -> Path:
    return Path(job.tune.output) / job.name


def run_tune(job: TuneJob) -> StageResult:
    """Run the sweep described by `job` (a TuneJob) and return its ranked trials, best YAML and model."""
    if job.train.store is None:
        raise SpecError("", ["train.store: required for a `tune` job (only a pipeline fills it from preprocess)"])
    space = SearchSpace(job.tune.space)
    checked = check_space(job.train, space)
    _check_store(checked)
    root = sweep_dir(job)
    tuner, restored = _tuner(job, space, root)
    log.info("sweep %s: %s (%d specs validated up front) → %s", job.name,
             "resuming" if restored else f"{space.num_trials(job.tune.num_samples)} trials", len(checked), root)
    grid = tuner.fit()
    return report_sweep(job, space, root, grid, restored=restored)


def _check_store(specs: list) -> None:
    """Channels and task of every checked spec against the store (SpecError before any trial starts)."""
    from voxray.platform.errors import DataError
    from voxray.training import tasks
    from voxray.training.data import channel_indices
    from voxray.training.loop import open_store

    store = open_store(specs[0].store)
    problems: list[str] = []
    for spec in specs:
        try:
            channel_indices(store.channels, spec.channels)
            tasks.num_outputs(spec.task, store.metadata())
        except (DataError, ValueError) as exc:
            line = f"train.channels={spec.channels!r}, train.task={spec.task!r}: {exc}"
            if line not in problems:
                problems.append(line)
    if problems:
        raise SpecError("tune.space", problems, hint=f"the store {specs[0].store} has channels {list(store.channels)}")


def _fingerprint(job: TuneJob) -> str:
    """Hash of what decides the trials (train + tune sections, not where results go)."""
    data = {"train": job.train.model_dump(mode="json"),
            "tune": job.tune.model_dump(mode="json", exclude={"output", "export_best"})}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _check_same_sweep(root: Path, job: TuneJob) -> None:
    path = root / FINGERPRINT
    old = json.loads(path.read_text()).get("fingerprint") if path.exists() else None
    if old is not None and old != _fingerprint(job):
        raise VoxrayError(f"{root} holds a sweep started from a different train/tune spec; refusing to mix them",
                          hint="change tune.output or the job name, or delete that folder to start over")


def _trainable(job: TuneJob, root: Path) -> Any:
    from ray import tune

    fn = tune.with_parameters(run_trial, job=job.model_dump(mode="json"), sweep_dir=str(root))
    return tune.with_resources(fn, {"CPU": job.tune.trial_cpus})


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _tuner(job: TuneJob, space: SearchSpace, root: Path) -> tuple[Any, bool]:
    """A new Tuner, or the interrupted one restored from `<root>/experiment` (same spec only)."""
    from ray import tune

    exp = root / EXPERIMENT
    trainable = _trainable(job, root)
    if tune.Tuner.can_restore(str(exp)):
        _check_same_sweep(root, job)
        log.info("restoring the sweep in %s", exp)
        return tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=True), True
    root.mkdir(parents=True, exist_ok=True)
    write_resolved(job, root)
    (root / FINGERPRINT).write_text(json.dumps({"fingerprint": _fingerprint(job)}))
    t = job.tune
    config = tune.TuneConfig(metric=t.metric, mode=t.mode, search_alg=build_search(t, job.train.seed),
                             scheduler=build_scheduler(t, job.train, space), num_samples=t.num_samples,
                             max_concurrent_trials=t.max_concurrent, trial_dirname_creator=_trial_dirname)
    run = tune.RunConfig(name=EXPERIMENT, storage_path=str(root.resolve()), verbose=1,
                         failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space=space.param_space(), tune_config=config, run_config=run), False

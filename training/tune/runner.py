"""`run_tune(job)`: validate the space, run (or resume) the Tune sweep of Ray Train trials, then report.

The sweep lives in `<tune.output>/<job name>/` (a local path or an object-store URI): `experiment/` (Tune's state,
one folder per trial), `trials/<id>/` (each trial's Train run: metrics.csv, checkpoints), `sweep.json` (spec
fingerprint and the store's data version), the results tables, plots, `best_train.yaml` and `mlflow.db`. Rerunning
the same job after the driver died resumes the sweep with `Tuner.restore`: finished trials are kept, interrupted
ones resume from their own Train checkpoints. A store whose cases changed since the sweep started starts it over
(the reason is logged); a changed spec is refused, so two sweeps never mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from voxray.platform.errors import SpecError, VoxrayError
from voxray.platform.specs.job import TuneJob
from voxray.platform.specs.loader import RESOLVED_NAME, dump_job
from voxray.platform.stages import StageResult
from voxray.training.rundir import RunDir, data_changes
from voxray.training.tune.driver import TRIALS_DIR, run_trial
from voxray.training.tune.report import report_sweep
from voxray.training.tune.search import build_scheduler, build_search
from voxray.training.tune.space import SearchSpace, check_space

log = logging.getLogger(__name__)

EXPERIMENT = "experiment"
FINGERPRINT = "sweep.json"


def sweep_dir(job: TuneJob) -> RunDir:
    return RunDir.of(job.tune.output, job.name)


def run_tune(job: TuneJob) -> StageResult:
    """Run the sweep described by `job` (a TuneJob) and return its ranked trials, best YAML and model."""
    if job.train.store is None:
        raise SpecError("", ["train.store: required for a `tune` job (only a pipeline fills it from preprocess)"])
    space = SearchSpace(job.tune.space)
    checked = check_space(job.train, space)
    data = _check_store(checked)
    root = sweep_dir(job)
    tuner, restored = _tuner(job, space, root, data)
    log.info("sweep %s: %s (%d specs validated up front) → %s", job.name,
             "resuming" if restored else f"{space.num_trials(job.tune.num_samples)} trials", len(checked), root.uri)
    grid = tuner.fit()
    return report_sweep(job, space, root, grid, restored=restored)


def _check_store(specs: list) -> dict:
    """Channels and task of every checked spec against the store (SpecError before any trial starts); returns the
    store's data version."""
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
    return store.data_version()


def _fingerprint(job: TuneJob) -> str:
    """Hash of what decides the trials (train + tune sections, not where results go)."""
    data = {"train": job.train.model_dump(mode="json"),
            "tune": job.tune.model_dump(mode="json", exclude={"output", "export_best"})}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _same_sweep(root: RunDir, job: TuneJob, data: dict) -> bool:
    """False when the sweep in `root` ran on other store data (then it starts over, logged); VoxrayError when it
    came from a different spec (two sweeps are never mixed)."""
    old = root.read_json(FINGERPRINT) or {}
    if old.get("fingerprint") is not None and old["fingerprint"] != _fingerprint(job):
        raise VoxrayError(f"{root.uri} holds a sweep started from a different train/tune spec; refusing to mix them",
                          hint="change tune.output or the job name, or delete that folder to start over")
    why = data_changes(old.get("data"), data)
    if why is None:
        return True
    log.warning("%s: the store changed since this sweep started (%s): starting the sweep over on the new data "
                "(exported models stay in the registry)", root.uri, why)
    root.remove(EXPERIMENT, TRIALS_DIR)
    return False


def _trainable(job: TuneJob, root: RunDir) -> Any:
    from ray import tune

    fn = tune.with_parameters(run_trial, job=job.model_dump(mode="json"), sweep_dir=root.uri)
    return tune.with_resources(fn, {"CPU": job.tune.trial_cpus})


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _tuner(job: TuneJob, space: SearchSpace, root: RunDir, data: dict) -> tuple[Any, bool]:
    """A new Tuner, or the interrupted one restored from `<root>/experiment` (same spec and store data only)."""
    from ray import tune

    from voxray.platform.storage import ray_storage

    exp_path, filesystem = ray_storage(root.child(EXPERIMENT))
    trainable = _trainable(job, root)
    if tune.Tuner.can_restore(exp_path, storage_filesystem=filesystem) and _same_sweep(root, job, data):
        log.info("restoring the sweep in %s", root.child(EXPERIMENT))
        return tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=filesystem), True
    root.local.mkdir(parents=True, exist_ok=True)
    root.write_text(RESOLVED_NAME, dump_job(job))
    root.write_text(FINGERPRINT, json.dumps({"fingerprint": _fingerprint(job), "data": data}))
    storage_path, filesystem = ray_storage(root.uri)
    t = job.tune
    config = tune.TuneConfig(metric=t.metric, mode=t.mode, search_alg=build_search(t, job.train.seed),
                             scheduler=build_scheduler(t, job.train, space), num_samples=t.num_samples,
                             max_concurrent_trials=t.max_concurrent, trial_dirname_creator=_trial_dirname)
    run = tune.RunConfig(name=EXPERIMENT, storage_path=storage_path, storage_filesystem=filesystem,
                         verbose=1, failure_config=tune.FailureConfig(max_failures=0))
    return tune.Tuner(trainable, param_space=space.param_space(), tune_config=config, run_config=run), False

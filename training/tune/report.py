"""After the sweep: ranked table, CSV/parquet, plots, MLflow, the best train YAML and the best model's export,
gathered into the stage's StageResult."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from voxray.platform.errors import JobFailed
from voxray.platform.specs.job import TuneJob
from voxray.platform.stages import StageResult
from voxray.training.rundir import RunDir
from voxray.training.tune.driver import TRIALS_DIR, trial_dir, trial_job
from voxray.training.tune.plots import plot_histories, plot_params
from voxray.training.tune.results import TrialOutcome, best_train_job, collect, rank, write_best_yaml, write_tables
from voxray.training.tune.search import max_steps
from voxray.training.tune.space import SearchSpace
from voxray.training.tune.tracking import log_sweep

log = logging.getLogger(__name__)

BEST_YAML = "best_train.yaml"
SUMMARY = "summary.json"


def report_sweep(job: TuneJob, space: SearchSpace, sweep: RunDir, grid: Any, *, restored: bool) -> StageResult:
    """Write every sweep artefact (into the sweep's working copy, then pushed when the sweep dir is on an object
    store) and summarise; not ok when no trial produced the metric."""
    t = job.tune
    root = sweep.local
    outcomes = collect(grid, space)
    rows = rank(outcomes, t.metric, t.mode, max_steps(job.train, space))
    tables = write_tables(rows, root)
    plots = [plot_histories(outcomes, t.metric, root / "metric_vs_step.png", max_steps=max_steps(job.train, space)),
             plot_params(rows, space, t.metric, root / "params_vs_metric.png")]
    summary: dict[str, Any] = {
        "tune_dir": sweep.uri, "trials": len(rows), "restored": restored,
        "stopped_early": sum(bool(r["stopped_early"]) for r in rows),
        "errored": sum(r["status"] == "ERROR" for r in rows),
        "results": sweep.child(tables["csv"].name), "plots": [sweep.child(p.name) for p in plots]}
    best = _best(outcomes, rows, t.metric)
    tracking = job.train.tracking
    if tracking.mlflow:
        summary["mlflow_parent_run"] = log_sweep(outcomes, rows, tune_dir=root, experiment=job.name,
                                                 uri=tracking.uri, space_yaml=t.space, metric=t.metric)
    result = StageResult(kind="tune", summary=summary, tables=[("trials (best first)", rows)])
    if best is None:
        result.ok = False
        result.message = f"no trial reported {t.metric!r}; see the errors in {tables['csv']}"
        return result
    trial_spec = trial_job(job, best.params, best.trial_id).train
    best_job = best_train_job(f"{job.name}-best", trial_spec, job.train, job.ray)
    best_yaml = write_best_yaml(best_job, root / BEST_YAML, best, t.metric, t.mode)
    summary.update({"best_trial": best.trial_id, t.metric: rows[0][t.metric], "best_yaml": sweep.child(BEST_YAML),
                    "best_params": {k: rows[0][k] for k in space.paths}})
    if t.export_best:
        summary["model"] = str(_previous_export(sweep, best.trial_id) or _export(job, best, sweep))
    versus = _versus_baseline(trial_dir(sweep.uri, best.trial_id), t.metric, t.mode)
    if versus:
        result.tables.append((f"best trial {best.trial_id} vs the per-voxel intensity baseline (same cases)", versus))
        summary["versus_baseline"] = versus
    (root / SUMMARY).write_text(json.dumps(summary, indent=1, default=str))
    sweep.push(*[p.name for p in root.iterdir() if p.name not in ("experiment", TRIALS_DIR) and p.is_file()])
    return result


def best_checkpoint(run: RunDir, metric: str, mode: str) -> tuple[Path | str, dict[str, Any]]:
    """The trial's kept Train checkpoint with the best `metric` (each holds its metrics.json): a local folder, or
    a URI when the sweep lives on an object store."""
    scored = []
    for folder, text in _checkpoint_metrics(run):
        metrics = json.loads(text)
        value = metrics.get(metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            scored.append((value, folder, metrics))
    if not scored:
        raise JobFailed(f"the best trial kept no checkpoint with {metric!r} under {run.child('ray')}")
    value, folder, metrics = (max if mode == "max" else min)(scored, key=lambda s: s[0])
    return folder, metrics


def _checkpoint_metrics(run: RunDir) -> list[tuple[Path | str, str]]:
    if not run.remote:
        return [(p.parent, p.read_text()) for p in (run.local / "ray").glob("*/checkpoint_*/metrics.json")]
    from voxray.platform import storage

    found = storage.glob(run.child("ray", "*", "checkpoint_*", "metrics.json"))
    return [(uri.rsplit("/", 1)[0], (storage.read_bytes(uri) or b"{}").decode()) for uri in found]


def _versus_baseline(run_dir: RunDir, metric: str, mode: str) -> list[dict]:
    """Dice of the best trial's best checkpoint beside the per-voxel baseline scored on the same validation cases."""
    from voxray.training.baseline import metrics_vs_baseline

    try:
        return metrics_vs_baseline(best_checkpoint(run_dir, metric, mode)[1])
    except JobFailed:
        return []


def _export(job: TuneJob, best: TrialOutcome, sweep: RunDir) -> Path | str:
    """Export the best trial's best checkpoint to `<train.registry>/<job name>/<version>`."""
    from voxray.training.export import export_checkpoint
    from voxray.training.loop import open_store

    spec = trial_job(job, best.params, best.trial_id).train
    run = trial_dir(sweep.uri, best.trial_id)
    folder, metrics = best_checkpoint(run, job.tune.metric, job.tune.mode)
    local = folder
    if isinstance(folder, str):  # on the object store: a local copy to load
        from voxray.platform import storage

        local = storage.download(folder, run.local / "best" / folder.rsplit("/", 1)[-1])
    val = {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "baseline/"))}
    source = {"job": job.name, "tune_dir": sweep.uri, "trial": best.trial_id, "run_dir": run.uri,
              "step": int(metrics.get("step", 0)), "params": {k: str(v) for k, v in best.params.items()}}
    return export_checkpoint(local, spec, open_store(spec.store), name=job.name, registry_root=spec.registry,
                             metrics=val, source={**source, "checkpoint": str(folder)})


def _previous_export(sweep: RunDir, trial_id: str) -> Path | str | None:
    """The model a previous report of this sweep exported for the same winner (a rerun adds no new version)."""
    old = sweep.read_json(SUMMARY)
    if old is None:
        return None
    model = old.get("model")
    if old.get("best_trial") != trial_id or not model:
        return None
    from voxray.platform.paths import is_remote

    if is_remote(model):
        from voxray.platform import storage

        return model if storage.exists(f"{model.rstrip('/')}/model.yaml") else None
    return Path(model) if (Path(model) / "model.yaml").is_file() else None


def _best(outcomes: list[TrialOutcome], rows: list[dict[str, Any]], metric: str) -> TrialOutcome | None:
    if not rows or rows[0]["status"] == "ERROR" or rows[0].get("best_step") is None:
        return None
    return next(o for o in outcomes if o.trial_id == rows[0]["trial"])

"""`run_train(job) -> StageResult`: store → Ray Train (or in-process) → best checkpoint → registry.

The run dir `<train.output>/<job name>/` (a local path or an object-store URI, see rundir.py) holds
job.resolved.yaml, split.json, data.json, metrics.csv, progress.png, overlays/, MLflow, Ray's checkpoints
(`ray/<job name>/`) and `result.json`. Rerunning the same job resumes from the last checkpoint; rerunning a finished
job returns its result without training when both the resolved spec and the store's data version (content hash of
its cases) match. A store whose cases changed since the run trains again from scratch, and the log says why.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from voxray.platform.errors import DataError, JobFailed, SpecError
from voxray.platform.specs.env import interpolate, redact
from voxray.platform.specs.loader import RESOLVED_NAME, dump_job
from voxray.platform.stages import StageResult
from voxray.training import tasks
from voxray.training.baseline import metrics_vs_baseline
from voxray.training.checkpoint import LocalReporter
from voxray.training.data import channel_indices, check_cases, labelled_cases, load_or_make_split
from voxray.training.export import export_checkpoint
from voxray.training.init import check_init
from voxray.training.loop import NAN_KEY, STOPPED_FILE, open_store, train_loop
from voxray.training.progress import ProgressBar
from voxray.training.rundir import DATA_FILE, TRACKING, RunDir, checkpoint_to_local, data_changes
from voxray.training.trainer import build_trainer, loop_config
from voxray.training.validation import ON_TRAINING_DATA

log = logging.getLogger(__name__)

__all__ = ["run_train", "preflight", "RESULT_FILE"]

RESULT_FILE = "result.json"


def _check(job: Any, store: Any, rd: RunDir | None = None) -> None:
    """Spec ↔ store problems (task, channels, enough labelled cases for the split) before any worker starts."""
    spec = job.train
    try:
        tasks.num_outputs(spec.task, store.metadata())
        if spec.task == "labels" and store.label_encoding == "bitmask":
            raise ValueError("the store is bitmask-encoded (overlapping classes): use task 'multilabel'")
    except ValueError as exc:
        raise SpecError("", [f"train.task: {exc}"]) from None
    try:
        channel_indices(store.channels, spec.channels)
    except DataError as exc:
        raise SpecError("", [f"train.channels: {exc}"]) from None
    labelled, unlabelled = labelled_cases(store)
    check_cases(len(labelled), spec.validation, store=f"the store {spec.store}", n_unlabelled=len(unlabelled))
    if not (rd or RunDir.of(spec.output, job.name)).has_checkpoint():  # a resumed run keeps its own weights
        check_init(spec, store)


def preflight(job: Any) -> None:
    """What can be checked from the store alone, run by `run_job` before Ray starts (a wrong fold count or a store
    without labels fails in a second, not after Ray's start-up). Skipped when the store is not there yet (a
    pipeline's preprocess stage builds it; `run_train` checks again then)."""
    train = getattr(job, "train", None)
    if train is None or train.store is None or getattr(job, "preprocess", None) is not None:
        return
    _check(job, open_store(train.store))


Fit = tuple[Path | None, str | None, dict]
"""(best checkpoint as a local folder, its path of record (a URI for a remote run), its metrics)."""


def _fit_ray(job: Any, rd: RunDir) -> Fit:
    """TorchTrainer.fit(); checkpoints go to `<run dir>/ray` (an object store for a remote run)."""
    import ray.train

    trainer = build_trainer(job, run_dir=rd.local, run_uri=rd.uri if rd.remote else None)
    with ProgressBar(rd.local, job.train.steps):
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise JobFailed(f"training failed: {exc}", hint=f"see the worker logs; rerun the same job to resume "
                                                             f"from the last checkpoint in {rd.uri}") from None
    c = job.train.checkpoint
    scored = [(ck, m) for ck, m in (result.best_checkpoints or []) if c.metric in m]
    if not scored:
        if result.checkpoint is None:
            return None, None, dict(result.metrics or {})
        return (*checkpoint_to_local(result.checkpoint, rd), dict(result.metrics or {}))
    ck, metrics = (max if c.mode == "max" else min)(scored, key=lambda cm: cm[1][c.metric])
    return (*checkpoint_to_local(ck, rd), dict(metrics))


def _fit_local(job: Any, rd: RunDir) -> Fit:
    """num_workers 0: the loop in this process, checkpoints under <run_dir>/checkpoints (mirrored for a remote run)."""
    rd.pull("checkpoints")
    with ProgressBar(rd.local, job.train.steps):
        train_loop(loop_config(job.train, name=job.name, run_dir=rd.local, in_ray=False,
                               run_uri=rd.uri if rd.remote else None))
    if rd.remote:
        rd.remove_remote("checkpoints")  # pruned folders must go there too
        rd.push("checkpoints")
    c = job.train.checkpoint
    best = LocalReporter(rd.local, keep=c.keep, metric=c.metric, mode=c.mode).best()
    metrics = json.loads((best / "metrics.json").read_text()) if best else {}
    record = None if best is None else rd.child("checkpoints", best.name)
    return best, record, metrics


def _result(rd: RunDir) -> dict | None:
    return rd.read_json(RESULT_FILE)


def _log_continuation(rd: RunDir, job: Any) -> None:
    """Say why a run dir with a finished result trains again (e.g. train.steps raised: it continues)."""
    done = _result(rd)
    if done is None:
        return
    import yaml

    old = (yaml.safe_load(done["resolved"]) or {}).get("train") or {}
    before, now = int(old.get("steps", 0)), job.train.steps
    if now > before:
        log.info("%s finished at %d steps; train.steps raised to %d: continuing from its last checkpoint (the "
                 "learning rate follows a new tail, train.schedule.extend_peak)", rd.uri, before, now)
    else:
        changed = sorted(k for k, v in job.train.model_dump(mode="json").items() if old.get(k) != v)
        log.info("%s has a finished result but the spec changed (train: %s): resuming from its last checkpoint",
                 rd.uri, ", ".join(changed) or "outside train")


def _finished(rd: RunDir, resolved: str, data: dict) -> StageResult | None:
    """The stored result when the spec and the store's data version both match (a result from before data
    versions were recorded matches on the spec alone)."""
    done = _result(rd)
    if done is None or done.get("resolved") != resolved:
        return None
    why = data_changes(done.get("data"), data)
    if why is not None:
        log.info("%s finished on other data: the store changed since (%s); training again", rd.uri, why)
        return None
    log.info("%s already finished (same spec, same store data %s): not retraining", rd.uri, data["hash"])
    summary = interpolate(done["summary"], rd.child(RESULT_FILE), unset=lambda name: f"${{{name}}}")  # written redacted
    return StageResult("train", summary=summary,
                       tables=_tables("validation", done["table"], done.get("versus_baseline") or []), message=None)


def _quality(metrics: dict, mode: str) -> dict[str, float]:
    """The figures the summary, result.json and model card carry: `val/...` (plus the training-data flag), or the
    training loss that ranked the checkpoints when nothing was validated."""
    if mode == "none":
        return {"train/loss": float(metrics["train/loss"])} if "train/loss" in metrics else {}
    val = {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "baseline/")) and k != NAN_KEY}
    if mode == "train_cases":
        val[ON_TRAINING_DATA] = 1.0
    return val


def _start_over_if_data_changed(rd: RunDir, data: dict) -> None:
    """A run dir whose checkpoints were trained on other data must not resume from them: its resume state (split,
    checkpoints, tracking) is cleared, with the reason logged. The registry keeps the models it exported."""
    why = data_changes(rd.read_json(DATA_FILE), data)
    if why is None:
        return
    log.warning("%s: the store changed since this run started (%s): training from scratch on the new data (the "
                "old checkpoints, split and metrics are cleared; exported models stay in the registry)", rd.uri, why)
    rd.remove("split.json", "checkpoints", "ray", "best", STOPPED_FILE, *TRACKING)


def run_train(job: Any) -> StageResult:
    """Train `job.train`, export the best checkpoint, return run dir, model dir and validation metrics
    (`train.ensemble: folds`: every fold, then the ensemble entry: training/ensemble.py)."""
    spec = job.train
    if spec.ensemble == "folds":
        from voxray.training.ensemble import run_fold_ensemble

        return run_fold_ensemble(job, run_train)
    rd = RunDir.of(spec.output, job.name)
    resolved = dump_job(job)
    store = open_store(spec.store)
    data = store.data_version()
    if (done := _finished(rd, resolved, data)) is not None:
        return done
    _start_over_if_data_changed(rd, data)
    _log_continuation(rd, job)
    _check(job, store, rd)
    rd.write_text(RESOLVED_NAME, resolved)
    rd.write_text(DATA_FILE, json.dumps(data, indent=1))
    rd.pull("split.json")
    split = load_or_make_split(rd.local / "split.json", store, spec.validation, spec.seed)
    rd.push("split.json")
    rd.remove(STOPPED_FILE)
    best, record, metrics = (_fit_local if spec.scaling.num_workers == 0 else _fit_ray)(job, rd)
    stopped = rd.read_json(STOPPED_FILE)
    if stopped is not None:
        step = stopped["nan_loss_at_step"]
        raise JobFailed(f"the loss became NaN/inf at step {step}; training stopped and the last good checkpoint "
                        f"is kept in {rd.uri}", hint="lower train.optimizer.lr or set train.grad_clip, then rerun")
    if best is None:
        raise JobFailed(f"training produced no checkpoint in {rd.uri}")
    val = _quality(metrics, spec.validation.mode)
    summary: dict[str, Any] = {"run_dir": rd.uri, "checkpoint": record, **val}
    if spec.validation.mode == "train_cases":
        summary[ON_TRAINING_DATA] = True
    if spec.export:
        model_dir = export_checkpoint(best, spec, store, name=job.name, registry_root=spec.registry, metrics=val,
                                      source={"job": job.name, "run_dir": rd.uri, "checkpoint": record,
                                              "step": int(metrics.get("step", 0))}, val_ids=split.get("val"))
        summary = {"run_dir": rd.uri, "model": str(model_dir), **summary}
    table = [{"metric": k, "value": round(v, 4)} for k, v in sorted(val.items()) if not k.startswith("baseline/")]
    versus = metrics_vs_baseline(val)
    rd.write_text(RESULT_FILE, json.dumps(redact({"resolved": resolved, "summary": summary, "table": table,
                                                  "versus_baseline": versus, "data": data}), indent=1))
    title = {"split": "validation", "train_cases": "validation ON THE TRAINING CASES", "none": "no validation"}
    return StageResult("train", summary=summary, tables=_tables(title[spec.validation.mode], table, versus))


def _tables(title: str, table: list[dict], versus: list[dict]) -> list[tuple[str, list[dict]]]:
    """The validation table, and Dice beside the per-voxel baseline on the same cases when there is one."""
    out = [(title, table)]
    if versus:
        out.append((f"{title}: Dice vs the per-voxel intensity baseline (same cases)", versus))
    return out

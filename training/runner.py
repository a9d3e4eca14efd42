"""`run_train(job) -> StageResult`: store → Ray Train (or in-process) → best checkpoint → registry.

The run dir `<train.output>/<job name>/` holds job.resolved.yaml, split.json, metrics.csv, progress.png,
overlays/, MLflow, Ray's checkpoints (`ray/<job name>/`) and `result.json`. Rerunning the same job resumes from
the last checkpoint; rerunning a finished job (same resolved spec) returns its result without training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from voxray.platform.errors import DataError, JobFailed, SpecError
from voxray.platform.specs.env import interpolate, redact
from voxray.platform.specs.loader import dump_job, write_resolved
from voxray.platform.stages import StageResult
from voxray.training import tasks
from voxray.training.baseline import metrics_vs_baseline
from voxray.training.checkpoint import LocalReporter
from voxray.training.data import channel_indices, check_cases, labelled_cases, load_or_make_split
from voxray.training.export import export_checkpoint
from voxray.training.init import check_init
from voxray.training.loop import NAN_KEY, STOPPED_FILE, open_store, train_loop
from voxray.training.progress import ProgressBar
from voxray.training.trainer import build_trainer, loop_config
from voxray.training.validation import ON_TRAINING_DATA

log = logging.getLogger(__name__)

__all__ = ["run_train", "preflight", "RESULT_FILE"]

RESULT_FILE = "result.json"


def _check(job: Any, store: Any) -> None:
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
    if not _has_checkpoint(Path(spec.output) / job.name):  # a resumed run keeps its own weights, not train.init's
        check_init(spec, store)


def _has_checkpoint(run_dir: Path) -> bool:
    return any(run_dir.glob("checkpoints/step_*/state.pt")) or any(run_dir.glob("ray/*/checkpoint_*/state.pt"))


def preflight(job: Any) -> None:
    """What can be checked from the store alone, run by `run_job` before Ray starts (a wrong fold count or a store
    without labels fails in a second, not after Ray's start-up). Skipped when the store is not there yet (a
    pipeline's preprocess stage builds it; `run_train` checks again then)."""
    train = getattr(job, "train", None)
    if train is None or train.store is None or getattr(job, "preprocess", None) is not None:
        return
    _check(job, open_store(train.store))


def _fit_ray(job: Any, run_dir: Path) -> tuple[Path | None, dict]:
    """TorchTrainer.fit(); returns (best checkpoint dir, its metrics)."""
    import ray.train

    trainer = build_trainer(job, run_dir=run_dir)
    with ProgressBar(run_dir, job.train.steps):
        try:
            result = trainer.fit()
        except ray.train.TrainingFailedError as exc:
            raise JobFailed(f"training failed: {exc}", hint=f"see the worker logs; rerun the same job to resume "
                                                             f"from the last checkpoint in {run_dir}") from None
    c = job.train.checkpoint
    scored = [(ck, m) for ck, m in (result.best_checkpoints or []) if c.metric in m]
    if not scored:
        return (Path(result.checkpoint.path) if result.checkpoint else None), dict(result.metrics or {})
    ck, metrics = (max if c.mode == "max" else min)(scored, key=lambda cm: cm[1][c.metric])
    return Path(ck.path), dict(metrics)


def _fit_local(job: Any, run_dir: Path) -> tuple[Path | None, dict]:
    """num_workers 0: the loop in this process, checkpoints under <run_dir>/checkpoints."""
    with ProgressBar(run_dir, job.train.steps):
        train_loop(loop_config(job.train, name=job.name, run_dir=run_dir, in_ray=False))
    c = job.train.checkpoint
    best = LocalReporter(run_dir, keep=c.keep, metric=c.metric, mode=c.mode).best()
    metrics = json.loads((best / "metrics.json").read_text()) if best else {}
    return best, metrics


def _log_continuation(run_dir: Path, job: Any) -> None:
    """Say why a run dir with a finished result trains again (e.g. train.steps raised: it continues)."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return
    import yaml

    old = (yaml.safe_load(json.loads(path.read_text())["resolved"]) or {}).get("train") or {}
    before, now = int(old.get("steps", 0)), job.train.steps
    if now > before:
        log.info("%s finished at %d steps; train.steps raised to %d: continuing from its last checkpoint (the "
                 "learning rate follows a new tail, train.schedule.extend_peak)", run_dir, before, now)
    else:
        changed = sorted(k for k, v in job.train.model_dump(mode="json").items() if old.get(k) != v)
        log.info("%s has a finished result but the spec changed (train: %s): resuming from its last checkpoint",
                 run_dir, ", ".join(changed) or "outside train")


def _finished(run_dir: Path, resolved: str) -> StageResult | None:
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    if done.get("resolved") != resolved:
        return None
    log.info("%s already finished (same spec): not retraining", run_dir)
    summary = interpolate(done["summary"], str(path), unset=lambda name: f"${{{name}}}")  # written redacted
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


def run_train(job: Any) -> StageResult:
    """Train `job.train`, export the best checkpoint, return run dir, model dir and validation metrics."""
    spec = job.train
    run_dir = Path(spec.output) / job.name
    resolved = dump_job(job)
    if (done := _finished(run_dir, resolved)) is not None:
        return done
    _log_continuation(run_dir, job)
    store = open_store(spec.store)
    _check(job, store)
    write_resolved(job, run_dir)
    split = load_or_make_split(run_dir / "split.json", store, spec.validation, spec.seed)
    (run_dir / STOPPED_FILE).unlink(missing_ok=True)
    best, metrics = (_fit_local if spec.scaling.num_workers == 0 else _fit_ray)(job, run_dir)
    if (run_dir / STOPPED_FILE).exists():
        step = json.loads((run_dir / STOPPED_FILE).read_text())["nan_loss_at_step"]
        raise JobFailed(f"the loss became NaN/inf at step {step}; training stopped and the last good checkpoint "
                        f"is kept in {run_dir}", hint="lower train.optimizer.lr or set train.grad_clip, then rerun")
    if best is None:
        raise JobFailed(f"training produced no checkpoint in {run_dir}")
    val = _quality(metrics, spec.validation.mode)
    summary: dict[str, Any] = {"run_dir": str(run_dir), "checkpoint": str(best), **val}
    if spec.validation.mode == "train_cases":
        summary[ON_TRAINING_DATA] = True
    if spec.export:
        model_dir = export_checkpoint(best, spec, store, name=job.name, registry_root=spec.registry, metrics=val,
                                      source={"job": job.name, "run_dir": str(run_dir),
                                              "step": int(metrics.get("step", 0))}, val_ids=split.get("val"))
        summary = {"run_dir": str(run_dir), "model": str(model_dir), **summary}
    table = [{"metric": k, "value": round(v, 4)} for k, v in sorted(val.items()) if not k.startswith("baseline/")]
    versus = metrics_vs_baseline(val)
    (run_dir / RESULT_FILE).write_text(json.dumps(redact({"resolved": resolved, "summary": summary, "table": table,
                                                          "versus_baseline": versus}), indent=1))
    title = {"split": "validation", "train_cases": "validation ON THE TRAINING CASES", "none": "no validation"}
    return StageResult("train", summary=summary, tables=_tables(title[spec.validation.mode], table, versus))


def _tables(title: str, table: list[dict], versus: list[dict]) -> list[tuple[str, list[dict]]]:
    """The validation table, and Dice beside the per-voxel baseline on the same cases when there is one."""
    out = [(title, table)]
    if versus:
        out.append((f"{title}: Dice vs the per-voxel intensity baseline (same cases)", versus))
    return out

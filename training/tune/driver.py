"""The per-trial function Tune runs: sampled values → the trial's TrainSpec → a Ray Train `TorchTrainer` (built
by `voxray.training.trainer.build_trainer`, the same one `voxray run` of a train job uses) whose validation
reports are forwarded to Tune.

The trial itself holds a sliver of CPU (`tune.trial_cpus`); its Train workers reserve their own resources from
`train.scaling`. The Train run lives in `<sweep>/trials/<trial_id>/` with a fixed name, so a trial restarted by
`Tuner.restore` resumes from its own latest Train checkpoint instead of starting over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from voxray.platform.paths import join
from voxray.platform.specs.job import TrainJob, TuneJob
from voxray.platform.specs.train import TrainSpec
from voxray.training.loop import NAN_KEY
from voxray.training.rundir import RunDir
from voxray.training.tune.space import SearchSpace, apply_values

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"


class ValidationReports(TuneReportCallback):
    """Forward only the Train reports that carry a fresh validation (and NaN stops) to Tune.

    The loop also reports between validations (checkpoint-only steps) with the previous validation's metrics
    or a placeholder; handing those to ASHA would judge a trial on stale numbers.
    """

    def __init__(self, every: int, steps: int) -> None:
        super().__init__()
        self.every, self.steps = every, steps

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if forwarded(metrics[0] if metrics else {}, self.every, self.steps):
            super().after_report(run_context, metrics, checkpoint)


def forwarded(metrics: dict[str, Any], every: int, steps: int) -> bool:
    """True for a report made right after a validation (`step` on the validation schedule) or a NaN stop."""
    step = metrics.get("step")
    fresh = step is not None and (int(step) % every == 0 or int(step) >= steps)
    return fresh or NAN_KEY in metrics


def trial_train_spec(base: TrainSpec, values: dict[str, Any], *, metric: str, mode: str) -> TrainSpec:
    """The base spec with the sampled values; checkpoints ranked by the sweep's metric, no per-trial export or
    MLflow (the sweep exports the winner and logs every trial as a child run)."""
    spec = apply_values(base, values)
    ckpt = spec.checkpoint.model_copy(update={"metric": metric, "mode": mode})
    tracking = spec.tracking.model_copy(update={"mlflow": False})
    return spec.model_copy(update={"checkpoint": ckpt, "tracking": tracking, "export": False})


def trial_job(job: TuneJob, values: dict[str, Any], trial_id: str) -> TrainJob:
    """The Train job of one trial: its spec, named by the trial id."""
    spec = trial_train_spec(job.train, values, metric=job.tune.metric, mode=job.tune.mode)
    return TrainJob(name=trial_id, ray=job.ray, train=spec)


def trial_dir(sweep_dir: str | Path, trial_id: str) -> RunDir:
    """Where a trial's Train run keeps metrics.csv, its split and (under `ray/`) its checkpoints (a local path or
    an object-store URI, as the sweep's)."""
    return RunDir.at(join(str(sweep_dir), TRIALS_DIR, trial_id))


def run_trial(config: dict[str, Any], *, job: dict[str, Any], sweep_dir: str) -> None:
    """Tune's trainable: build and fit the trial's TorchTrainer; its reports reach Tune via the callback."""
    import ray.tune

    from voxray.training.trainer import build_trainer

    # Train propagates this to its controller; on a busy machine a worker group can take over Train's 60 s
    # default to start, and each timed-out attempt is retried with a fresh placement group.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    tune_job = TuneJob.model_validate(job)
    values = SearchSpace(tune_job.tune.space).decode(config)
    trial_id = ray.tune.get_context().get_trial_id()
    train_job = trial_job(tune_job, values, trial_id)
    spec, rd = train_job.train, trial_dir(sweep_dir, trial_id)
    log.info("trial %s: %s", trial_id, values)
    trainer = build_trainer(train_job, run_dir=rd.local, run_uri=rd.uri if rd.remote else None,
                            storage_path=rd.child("ray"), name=trial_id,
                            callbacks=[ValidationReports(spec.validation.every, spec.steps)])
    trainer.fit()

"""Ray Train adapter: a TorchTrainer around `train_loop`, configured from the `train` spec.

`build_trainer(job, run_dir=..., storage_path=...)` is what `run_train` and the Tune driver call. Resume is
Ray's: a rerun with the same `RunConfig(storage_path, name)` hands the latest checkpoint to `train_loop` via
`ray.train.get_checkpoint()`. DDP uses gloo on CPU and nccl on GPU (TorchConfig picks it from `use_gpu`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from voxray.platform.specs.train import TrainSpec
from voxray.training.loop import train_loop

__all__ = ["build_trainer", "loop_config", "run_config"]


def loop_config(train: TrainSpec, *, name: str, run_dir: str | Path, in_ray: bool = True) -> dict[str, Any]:
    """The `train_loop_config` shape: {"train": TrainSpec JSON, "name", "run_dir", "in_ray"} (Tune edits "train")."""
    return {"train": train.model_dump(mode="json"), "name": name, "run_dir": str(run_dir), "in_ray": in_ray}


def run_config(train: TrainSpec, *, name: str, storage_path: str | Path, callbacks: Sequence[Any] = ()):
    """RunConfig with keep-best checkpoints (CheckpointConfig) and restarts (FailureConfig) from the spec."""
    import ray.train

    c = train.checkpoint
    return ray.train.RunConfig(
        name=name, storage_path=str(storage_path),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=c.keep, checkpoint_score_attribute=c.metric,
                                                     checkpoint_score_order=c.mode),
        failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
        callbacks=list(callbacks) or None)


def build_trainer(job: Any, *, run_dir: str | Path, storage_path: str | Path | None = None,
                  train: TrainSpec | None = None, name: str | None = None, callbacks: Sequence[Any] = ()):
    """TorchTrainer for `job.train` (or an explicit `train` spec, e.g. a Tune trial's).

    Checkpoints live under `<storage_path>/<name>` (default: `<run_dir>/ray`, name = job name); tracking files
    (metrics.csv, progress.png, MLflow) under `run_dir`. `scaling.num_workers: 0` runs in the driver process.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    train = train or job.train
    name = name or job.name
    s = train.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})}
    scaling = ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources)
    storage = Path(storage_path) if storage_path is not None else Path(run_dir) / "ray"
    return TorchTrainer(train_loop, train_loop_config=loop_config(train, name=name, run_dir=run_dir),
                        scaling_config=scaling,
                        run_config=run_config(train, name=name, storage_path=storage.resolve(), callbacks=callbacks))

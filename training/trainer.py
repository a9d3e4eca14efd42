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


def loop_config(train: TrainSpec, *, name: str, run_dir: str | Path, in_ray: bool = True,
                run_uri: str | None = None) -> dict[str, Any]:
    """The `train_loop_config` shape: {"train": TrainSpec JSON, "name", "run_dir", "run_uri", "in_ray"} (Tune edits
    "train"). `run_uri`: the run dir on an object store (each node then works in its own cache folder)."""
    return {"train": train.model_dump(mode="json"), "name": name, "run_dir": str(run_dir), "run_uri": run_uri,
            "in_ray": in_ray}


def run_config(train: TrainSpec, *, name: str, storage_path: str | Path, callbacks: Sequence[Any] = ()):
    """RunConfig with keep-best checkpoints (CheckpointConfig) and restarts (FailureConfig) from the spec; an
    object-store `storage_path` goes through voxray's fsspec backend (same credentials and endpoint)."""
    import ray.train

    from voxray.platform.storage import ray_storage

    path, filesystem = ray_storage(str(storage_path))
    c = train.checkpoint
    return ray.train.RunConfig(
        name=name, storage_path=path, storage_filesystem=filesystem,
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=c.keep, checkpoint_score_attribute=c.metric,
                                                     checkpoint_score_order=c.mode),
        failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
        callbacks=list(callbacks) or None)


def build_trainer(job: Any, *, run_dir: str | Path, storage_path: str | Path | None = None,
                  train: TrainSpec | None = None, name: str | None = None, callbacks: Sequence[Any] = (),
                  run_uri: str | None = None):
    """TorchTrainer for `job.train` (or an explicit `train` spec, e.g. a Tune trial's).

    Checkpoints live under `<storage_path>/<name>` (default: `<run dir>/ray`, name = job name); tracking files
    (metrics.csv, progress.png, MLflow) under `run_dir`, pushed to `run_uri` when the run dir is on an object store.
    `scaling.num_workers: 0` runs in the driver process.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    train = train or job.train
    name = name or job.name
    s = train.scaling
    resources = {"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})}
    scaling = ray.train.ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources)
    if storage_path is None:
        storage_path = f"{run_uri.rstrip('/')}/ray" if run_uri else Path(run_dir) / "ray"
    return TorchTrainer(train_loop, train_loop_config=loop_config(train, name=name, run_dir=run_dir, run_uri=run_uri),
                        scaling_config=scaling,
                        run_config=run_config(train, name=name, storage_path=storage_path, callbacks=callbacks))

"""`validate`: sliding-window inference on whole validation volumes of the store, metrics and overlay PNGs.

With several DDP ranks every rank validates its share of the cases (case i goes to rank i % world) and the
per-case metrics are gathered and averaged in case order, so the figures equal a single-rank validation while
each rank spends 1/world of the time (rank 0 validating ~100 full volumes alone would keep the others waiting in a
collective long enough to time out on a real cluster). The per-voxel baseline is fitted once on rank 0, broadcast,
and scored the same sharded way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from voxray.platform.errors import DataError
from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.inference import sliding_window_predict
from voxray.training.metrics import MetricAccumulator, case_metrics

log = logging.getLogger(__name__)

__all__ = ["validate", "validate_baseline", "fit_store_baseline", "load_case", "masks_background", "OVERLAY_CASES", "ON_TRAINING_DATA"]

BASELINE_FIT_CASES = 24
"""Training cases the per-voxel baseline is fitted on at most (voxels are subsampled per case too)."""

ON_TRAINING_DATA = "validation_on_training_data"
"""Metric set to 1.0 when `val/...` figures come from the training cases (`validation.mode: train_cases`)."""

OVERLAY_CASES = 2
"""Validation cases that get an overlay PNG at each validation."""


def load_case(store: Any, case_id: str, channels: Sequence[int] | None) -> tuple[torch.Tensor, np.ndarray]:
    """Whole image (C, Z, Y, X) float32 (channel subset applied) and label (Z, Y, X) uint8 of one case."""
    image = np.asarray(store.image(case_id)[...], dtype=np.float32)
    if channels is not None:
        image = image[list(channels)]
    label = store.label(case_id)
    if label is None:  # an all-background stand-in would score a model on labels nobody drew
        raise DataError(f"case {case_id!r} has no label; validation uses labelled cases only")
    return torch.from_numpy(image), np.asarray(label[...])


def masks_background(store: Any) -> bool:
    """Whether the store's transform makes zero voxels "outside the body" (see `TransformConfig.masks_background`)."""
    from voxray.preprocessing.transforms import TransformConfig

    return TransformConfig.from_dict(dict((getattr(store, "attrs", None) or {}).get("transform") or {})).masks_background


def fit_store_baseline(store: Any, case_ids: Sequence[str], task: str, meta: Mapping[str, Any], *,
                       channels: Sequence[int] | None = None, seed: int = 0) -> Any:
    """The per-voxel baseline (`training.baseline`) fitted on up to BASELINE_FIT_CASES of the store's cases."""
    from voxray.training.baseline import fit_baseline

    cases = (load_case(store, c, channels) for c in list(case_ids)[:BASELINE_FIT_CASES])
    return fit_baseline(((img.numpy(), lab) for img, lab in cases), task, meta, seed=seed)


def _distributed(world: int) -> bool:
    import torch.distributed as dist

    return world > 1 and dist.is_available() and dist.is_initialized()


def _reduce(per_case: list[tuple[int, dict[str, float]]], world: int, prefix: str) -> dict[str, float]:
    """Every rank's (case index, metrics) gathered and averaged in case order (the single-rank figures)."""
    parts: list[Any] = [per_case]
    if _distributed(world):
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, per_case)
    acc = MetricAccumulator(prefix=prefix)
    for _, metrics in sorted((item for part in parts for item in part), key=lambda im: im[0]):
        acc.add(metrics)
    return acc.aggregate()


def _broadcast(obj: Any, rank: int, world: int) -> Any:
    """Rank 0's `obj` on every rank."""
    if not _distributed(world):
        return obj
    import torch.distributed as dist

    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def validate_baseline(store: Any, train_ids: Sequence[str], val_ids: Sequence[str], spec: TrainSpec,
                      meta: Mapping[str, Any], *, channels: Sequence[int] | None, rank: int = 0,
                      world: int = 1) -> dict[str, float]:
    """`baseline/...` metrics: the per-voxel baseline fitted on (up to BASELINE_FIT_CASES) training cases and
    scored on the same validation cases as the model, so every `val/dice_*` has its non-learned reference. With
    `world` > 1 (all ranks call it): fitted on rank 0, broadcast, each rank scores its share."""
    from voxray.training.baseline import baseline_metrics

    baseline = None
    if rank == 0:
        baseline = fit_store_baseline(store, list(train_ids) or list(val_ids), spec.task, meta, channels=channels,
                                      seed=spec.seed)
    baseline = _broadcast(baseline, rank, world)
    cases = list(val_ids)[: spec.validation.max_cases or None]
    restrict = masks_background(store)
    per_case = []
    for i in range(rank, len(cases), world):
        case = (*load_case(store, cases[i], channels), store.case_attrs(cases[i]).get("spacing") or [1.0] * 3)
        one = baseline_metrics(baseline, [case], spec.task, meta, restrict=restrict)
        per_case.append((i, {k[len("baseline/"):]: v for k, v in one.items()}))
    metrics = _reduce(per_case, world, "baseline/")
    if rank == 0:
        log.info("per-voxel baseline on %d validation cases: %s", len(cases),
                 {k: round(v, 4) for k, v in metrics.items() if "dice" in k})
    return metrics


def _overlay(image: torch.Tensor, label: np.ndarray, pred: np.ndarray, out: Path, title: str) -> Path:
    from voxray.training.tracking import save_overlay

    fg = (label > 0).reshape(label.shape[0], -1).sum(1)
    z = int(fg.argmax()) if fg.any() else label.shape[0] // 2
    save_overlay(image[0, z].numpy(), label[z], pred[z], out, title)
    return out


def validate(model: nn.Module, store: Any, case_ids: Sequence[str], spec: TrainSpec, meta: Mapping[str, Any], *,
             channels: Sequence[int] | None, device: torch.device, step: int = 0,
             overlay_dir: Path | None = None, tracker: Any = None,
             on_case: Callable[[int, int], None] | None = None, rank: int = 0, world: int = 1) -> dict[str, float]:
    """Mean `val/...` metrics over (at most `validation.max_cases`) validation cases; model left in train mode.

    With `world` > 1 every rank must call it: this rank validates cases rank, rank + world, … and every rank gets
    the metrics of all cases. `on_case(done, total)` is called before each of this rank's cases and at the end
    (progress lines for long validations); overlays are drawn for this rank's first OVERLAY_CASES cases. With
    `validation.mode: train_cases` the metrics carry `validation_on_training_data: 1.0` and the log says so.
    """
    names = tasks.output_names(spec.task, meta)
    cases = list(case_ids)[: spec.validation.max_cases or None]
    mine = list(range(rank, len(cases), world))
    per_case: list[tuple[int, dict[str, float]]] = []
    restrict = masks_background(store)
    for done, i in enumerate(mine):
        case = cases[i]
        if on_case is not None:
            on_case(done, len(mine))
        image, label = load_case(store, case, channels)
        logits = sliding_window_predict(model, image, spec.patch, spec.validation.overlap, mode="gaussian",
                                        sw_batch_size=spec.batch_size if len(spec.patch) == 3 else 8,
                                        device=device, precision=spec.precision).cpu()
        if restrict:
            logits = tasks.restrict_to_nonzero(logits, image, spec.task)
        target = tasks.encode_target(label, spec.task, meta)
        spacing = store.case_attrs(case).get("spacing") or [1.0] * 3
        per_case.append((i, case_metrics(logits, target, spec.task, names, spacing)))
        if overlay_dir is not None and done < OVERLAY_CASES:
            pred = tasks.decode_logits(logits, spec.task, meta)
            path = _overlay(image, label, pred, overlay_dir / f"step{step:07d}_{case}.png", f"{case} step {step}")
            if tracker is not None:
                tracker.artifact(path, "overlays")
    if on_case is not None:
        on_case(len(mine), len(mine))
    model.train()
    metrics = _reduce(per_case, world, "val/")
    dice = {k: round(v, 4) for k, v in metrics.items() if "dice" in k}
    if spec.validation.mode == "train_cases":
        metrics[ON_TRAINING_DATA] = 1.0
        if rank == 0:
            log.warning("validation at step %d on the TRAINING cases (validation.mode train_cases: measures fit, "
                        "not generalisation): %s", step, dice)
    elif rank == 0:
        log.info("validation at step %d on %d cases (%d rank%s): %s", step, len(cases), world, "s" * (world > 1),
                 dice)
    return metrics

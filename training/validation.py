"""`validate`: sliding-window inference on whole validation volumes of the store, metrics and overlay PNGs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.inference import sliding_window_predict
from voxray.training.metrics import MetricAccumulator, case_metrics

log = logging.getLogger(__name__)

__all__ = ["validate", "load_case", "OVERLAY_CASES"]

OVERLAY_CASES = 2
"""Validation cases that get an overlay PNG at each validation."""


def load_case(store: Any, case_id: str, channels: Sequence[int] | None) -> tuple[torch.Tensor, np.ndarray]:
    """Whole image (C, Z, Y, X) float32 (channel subset applied) and label (Z, Y, X) uint8 of one case."""
    image = np.asarray(store.image(case_id)[...], dtype=np.float32)
    if channels is not None:
        image = image[list(channels)]
    label = store.label(case_id)
    lab = np.asarray(label[...]) if label is not None else np.zeros(image.shape[1:], np.uint8)
    return torch.from_numpy(image), lab


def _overlay(image: torch.Tensor, label: np.ndarray, pred: np.ndarray, out: Path, title: str) -> Path:
    from voxray.training.tracking import save_overlay

    fg = (label > 0).reshape(label.shape[0], -1).sum(1)
    z = int(fg.argmax()) if fg.any() else label.shape[0] // 2
    save_overlay(image[0, z].numpy(), label[z], pred[z], out, title)
    return out


def validate(model: nn.Module, store: Any, case_ids: Sequence[str], spec: TrainSpec, meta: Mapping[str, Any], *,
             channels: Sequence[int] | None, device: torch.device, step: int = 0,
             overlay_dir: Path | None = None, tracker: Any = None) -> dict[str, float]:
    """Mean `val/...` metrics over (at most `validation.max_cases`) validation cases; model left in train mode."""
    names = tasks.output_names(spec.task, meta)
    cases = list(case_ids)[: spec.validation.max_cases or None]
    acc = MetricAccumulator()
    amp = device.type == "cuda" and spec.precision in ("bf16", "auto")
    for i, case in enumerate(cases):
        image, label = load_case(store, case, channels)
        logits = sliding_window_predict(model, image, spec.patch, spec.validation.overlap, mode="gaussian",
                                        sw_batch_size=spec.batch_size if len(spec.patch) == 3 else 8,
                                        device=device, amp=amp).cpu()
        target = tasks.encode_target(label, spec.task, meta)
        spacing = store.case_attrs(case).get("spacing") or [1.0] * 3
        acc.add(case_metrics(logits, target, spec.task, names, spacing))
        if overlay_dir is not None and i < OVERLAY_CASES:
            pred = tasks.decode_logits(logits, spec.task, meta)
            path = _overlay(image, label, pred, overlay_dir / f"step{step:07d}_{case}.png", f"{case} step {step}")
            if tracker is not None:
                tracker.artifact(path, "overlays")
    model.train()
    metrics = acc.aggregate()
    log.info("validation at step %d: %s", step, {k: round(v, 4) for k, v in metrics.items() if "dice" in k})
    return metrics

"""A non-learned per-voxel baseline printed beside every Dice: a Bayes classifier on quantised joint intensities.

A segmentation model is only worth training if it beats what a voxel's own intensities already tell. The
baseline fits, on the training cases' voxels only, the class frequencies of every cell of a joint histogram over
all input channels (the best any per-voxel intensity rule can do at that quantisation: it subsumes per-class
thresholds and channel combinations) and predicts the class posteriors of each voxel. It sees no context:
what a model gains over it is what it learned from shape, neighbourhood and position.

It is an `nn.Module` mapping (B, C, *S) images to the task's logits, so it goes through exactly the model's
validation and prediction paths (sliding window, task decoding, inverse transform, metrics).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from voxray.training import tasks

log = logging.getLogger(__name__)

MAX_CELLS = 1 << 18
"""Joint-histogram cells at most: bins per channel shrink with the channel count (4 channels → 22 bins)."""
MAX_BINS = 24
BIN_CHOICES = (6, 8, 12, 16, 24)
THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5)
VOXELS_PER_CASE = 400_000
"""Voxels sampled per training case (all of them for small cases); bounds the fit on large datasets."""
EPS = 1e-6

__all__ = ["VoxelBaseline", "fit_baseline", "baseline_metrics", "dice_table", "metrics_vs_baseline"]


class VoxelBaseline(nn.Module):
    """Per-voxel class posteriors from a joint intensity histogram, returned as the task's logits."""

    def __init__(self, edges: np.ndarray, class_values: Sequence[int], posteriors: np.ndarray, task: str,
                 meta: Mapping[str, Any]) -> None:
        super().__init__()
        self.task = task
        self.register_buffer("edges", torch.as_tensor(edges, dtype=torch.float32))  # (C, bins - 1) inner edges
        # task output k of class value c: target of a voxel labelled c, so outputs are expectations under p(c | x)
        target = tasks.encode_target(np.asarray(class_values, dtype=np.int64), task, meta).float()  # (K|1, n)
        if tasks.activation(task) == "softmax":
            onehot = torch.zeros(tasks.num_outputs(task, meta), len(class_values))
            onehot[target[0].long(), torch.arange(len(class_values))] = 1.0
            target = onehot
        out = torch.as_tensor(posteriors, dtype=torch.float32) @ target.T  # (cells, K)
        self.register_buffer("table", out)
        self.register_buffer("shift", torch.zeros(out.shape[1]))  # logit(decision threshold) per sigmoid output

    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """Per-output probability thresholds of sigmoid tasks (0.5 = the Bayes rule for accuracy)."""
        t = torch.as_tensor(list(thresholds), dtype=torch.float32)
        self.shift = torch.log(t) - torch.log1p(-t)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        prob = self.table.to(image.device)[joint_cells(image, self.edges.to(image.device))]  # (B, *S, K)
        prob = prob.movedim(-1, 1).clamp(EPS, 1.0 - EPS)
        if tasks.activation(self.task) == "softmax":
            return prob.log()
        return torch.log(prob) - torch.log1p(-prob) - self.shift.to(image.device).view(1, -1, *[1] * (prob.ndim - 2))


def joint_cells(image: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Joint histogram cell of every voxel of (B, C, *S) images given (C, bins - 1) inner edges → (B, *S) int64."""
    bins = edges.shape[1] + 1
    idx = torch.zeros((image.shape[0], *image.shape[2:]), dtype=torch.long, device=image.device)
    for c in range(edges.shape[0]):
        idx = idx * bins + torch.bucketize(image[:, c].float().contiguous(), edges[c])
    return idx


def _bins_for(channels: int) -> int:
    return int(max(2, min(MAX_BINS, np.floor(MAX_CELLS ** (1.0 / max(channels, 1))))))


def _edges(x: np.ndarray, bins: int) -> np.ndarray:
    """(C, bins - 1) inner bin edges per channel: quantiles of the voxels inside the body (nonzero in some channel),
    so masked background does not use up the bins, plus ±1e-6 so exact zeros (outside the body) get a bin of their
    own (`bins` counts both)."""
    body = (x != 0).any(0)
    inside = x[:, body] if body.any() else x
    qs = np.linspace(0.0, 1.0, bins - 1)[1:-1]
    zero = np.array([-1e-6, 1e-6])
    return np.stack([np.sort(np.concatenate([np.quantile(row, qs), zero])) for row in inside])


def fit_baseline(cases: Iterable[tuple[np.ndarray, np.ndarray]], task: str, meta: Mapping[str, Any],
                 seed: int = 0, alpha: float = 1.0) -> VoxelBaseline:
    """Fit on (image (C, *S) float, label (*S) int) training cases; bins are per-channel quantiles of their voxels.

    The bins per channel are chosen among BIN_CHOICES by fitting on half of the cases and scoring Dice on the other
    half (too few bins blur classes together, too many leave cells empty), so the baseline is shown at its best.
    `alpha` pseudo-counts spread by the class prior keep rare cells from becoming certain.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for image, label in cases:
        x = np.asarray(image, dtype=np.float32).reshape(image.shape[0], -1)
        y = np.asarray(label).reshape(-1)
        if x.shape[1] != y.size:
            raise ValueError(f"image {image.shape} and label {label.shape} have different spatial sizes")
        if y.size > VOXELS_PER_CASE:
            keep = rng.choice(y.size, VOXELS_PER_CASE, replace=False)
            x, y = x[:, keep], y[keep]
        xs.append(x)
        ys.append(y)
    if not xs:
        raise ValueError("the baseline needs at least one labelled training case")
    bins, thresholds = _select(xs, ys, task, meta, alpha) if len(xs) >= 2 else (_bins_for(xs[0].shape[0]), None)
    x, y = np.concatenate(xs, axis=1), np.concatenate(ys)
    model = _fit(x, y, bins, task, meta, alpha)
    if thresholds is not None:
        model.set_thresholds(thresholds)
    log.info("baseline: per-voxel Bayes classifier, %d channels × %d bins, thresholds %s, %d voxels", x.shape[0],
             bins, thresholds, y.size)
    return model


def _fit(x: np.ndarray, y: np.ndarray, bins: int, task: str, meta: Mapping[str, Any], alpha: float) -> VoxelBaseline:
    edges = _edges(x, bins)
    n_cells = (edges.shape[1] + 1) ** x.shape[0]
    values, y_idx = np.unique(y, return_inverse=True)
    cell = joint_cells(torch.from_numpy(x[None]), torch.from_numpy(edges).float())[0].numpy()
    counts = np.bincount(cell * len(values) + y_idx, minlength=n_cells * len(values))
    counts = counts.reshape(-1, len(values)).astype(np.float64)
    prior = np.bincount(y_idx, minlength=len(values)) / y.size
    post = (counts + alpha * prior) / (counts.sum(1, keepdims=True) + alpha)
    return VoxelBaseline(edges, [int(v) for v in values], post, task, meta)


def _select(xs: list[np.ndarray], ys: list[np.ndarray], task: str, meta: Mapping[str, Any],
            alpha: float) -> tuple[int, list[float] | None]:
    """Fit on every other case, score pooled Dice on the rest: the BIN_CHOICES entry (capped by MAX_CELLS) that
    scores best and, for sigmoid tasks, the per-output threshold from THRESHOLDS that scores best with it (small
    structures rarely reach a posterior of 0.5, yet a lower threshold can still find them)."""
    from voxray.training.metrics import label_map_dice

    fit_x, fit_y = np.concatenate(xs[::2], axis=1), np.concatenate(ys[::2])
    val_x, val_y = np.concatenate(xs[1::2], axis=1), np.concatenate(ys[1::2])
    scores, models = {}, {}
    for bins in sorted({min(b, _bins_for(fit_x.shape[0])) for b in BIN_CHOICES}):
        models[bins] = _fit(fit_x, fit_y, bins, task, meta, alpha)
        with torch.no_grad():
            logits = models[bins](torch.from_numpy(val_x[None]))[0]
        scores[bins] = label_map_dice(tasks.decode_logits(logits, task, meta), val_y, task, meta)["mean"]
    bins = max(scores, key=lambda b: (scores[b], -b))
    if tasks.activation(task) == "softmax":
        return bins, None
    with torch.no_grad():
        prob = torch.sigmoid(models[bins](torch.from_numpy(val_x[None]))[0])  # (K, N)
    target = tasks.encode_target(val_y, task, meta) > 0.5
    best = []
    for k in range(prob.shape[0]):
        def dice(t: float) -> float:
            p = prob[k] > t
            denom = int(p.sum()) + int(target[k].sum())
            return 1.0 if denom == 0 else 2.0 * int((p & target[k]).sum()) / denom
        best.append(max(THRESHOLDS, key=lambda t: (dice(t), t)))
    return bins, best


def baseline_metrics(baseline: VoxelBaseline, cases: Iterable[tuple[torch.Tensor, np.ndarray, Sequence[float]]],
                     task: str, meta: Mapping[str, Any], restrict: bool = False) -> dict[str, float]:
    """`baseline/...` metrics (the same names as `val/...`) over (image, label, spacing) validation cases."""
    from voxray.training.metrics import MetricAccumulator, case_metrics

    names = tasks.output_names(task, meta)
    acc = MetricAccumulator(prefix="baseline/")
    with torch.no_grad():
        for image, label, spacing in cases:
            image = torch.as_tensor(image)
            logits = baseline(image[None])[0]
            if restrict:
                logits = tasks.restrict_to_nonzero(logits, image, task)
            acc.add(case_metrics(logits, tasks.encode_target(label, task, meta), task, names, spacing))
    return acc.aggregate()


def dice_table(model: Mapping[str, float], baseline: Mapping[str, float], **extra: Any) -> list[dict]:
    """Rows output → model Dice, baseline Dice and the gain, for outputs both sides have (`mean` last)."""
    names = [n for n in model if n in baseline and n != "mean"] + (["mean"] if "mean" in model else [])
    return [{"output": n, "model_dice": round(float(model[n]), 4), "baseline_dice": round(float(baseline[n]), 4),
             "gain": round(float(model[n]) - float(baseline[n]), 4), **extra} for n in names]


def metrics_vs_baseline(metrics: Mapping[str, Any]) -> list[dict]:
    """`dice_table` of the `val/dice_*` and `baseline/dice_*` figures of one validation (empty when either lacks)."""
    def pick(prefix: str) -> dict[str, float]:
        return {k[len(prefix):]: float(v) for k, v in metrics.items()
                if k.startswith(prefix) and isinstance(v, (int, float))}

    return dice_table(pick("val/dice_"), pick("baseline/dice_"))

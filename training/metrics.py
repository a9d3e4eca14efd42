"""Validation metrics on whole volumes (MONAI where it has them), named `val/...`.

Per case: Dice and IoU per output channel (MONAI, empty ground truth and empty prediction = 1), HD95 (MONAI,
in mm using the store spacing; both empty = 0, exactly one empty = the volume's diagonal in mm, a finite worst
case like BraTS's 374), pixel accuracy and MSE of the probabilities (2D seeds), and for `binary` the ISLES 2022
set: absolute volume difference (ml), absolute lesion-count difference and lesion-wise F1 (26-connectivity).
`labels` drops the background channel from Dice/IoU/HD95. `MetricAccumulator` averages cases.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou
from scipy import ndimage

from voxray.training.tasks import activate, activation, encode_target, output_names

__all__ = ["case_metrics", "label_map_dice", "label_lesions", "lesion_stats", "hd95", "MetricAccumulator"]

_CONN26 = np.ones((3, 3, 3), dtype=bool)


def hd95(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance (mm) of two boolean masks (*S)."""
    p, g = bool(pred.any()), bool(gt.any())
    if not p and not g:
        return 0.0
    if p != g:
        return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(pred.shape, spacing))))
    d = compute_hausdorff_distance(pred[None, None].float(), gt[None, None].float(), include_background=True,
                                   percentile=95, spacing=list(spacing))
    return float(d.item())


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask (26-connected in 3D, 8 in 2D): the one lesion rule of validation
    metrics and of the served per-class lesion counts."""
    structure = _CONN26 if mask.ndim == 3 else np.ones((3,) * mask.ndim, dtype=bool)
    labels, n = ndimage.label(mask, structure=structure)
    return labels, int(n)


def lesion_stats(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """ISLES lesion-wise figures for boolean masks: lesion-count difference and lesion-wise F1 (26-connected)."""
    gt_lab, n_gt = label_lesions(gt)
    pred_lab, n_pred = label_lesions(pred)
    tp = len(np.unique(gt_lab[(gt_lab > 0) & pred])) if n_gt else 0
    fp = n_pred - (len(np.unique(pred_lab[(pred_lab > 0) & gt])) if n_pred else 0)
    fn = n_gt - tp
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"abs_lesion_count_diff": float(abs(n_pred - n_gt)), "lesion_f1": float(f1)}


def _masks(logits: torch.Tensor, target: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(probabilities, predicted masks, ground-truth masks), each (K, *S); `labels` one-hots both sides."""
    probs = activate(logits, task)
    if activation(task) == "softmax":
        k = logits.shape[0]
        pred = torch.nn.functional.one_hot(logits.argmax(0), k).movedim(-1, 0).bool()
        gt = torch.nn.functional.one_hot(target[0].long(), k).movedim(-1, 0).bool()
        return probs, pred, gt
    return probs, logits > 0, target > 0.5


def case_metrics(logits: torch.Tensor, target: torch.Tensor, task: str, names: Sequence[str],
                 spacing: Sequence[float], *, hd: bool = True) -> dict[str, float]:
    """Metrics of one case: logits (K, *S) and the encoded target (`tasks.encode_target`) on the same grid."""
    logits, target = logits.float().cpu(), target.cpu()
    probs, pred, gt = _masks(logits, target, task)
    first = 1 if task == "labels" else 0  # labels: no background in the overlap metrics
    out: dict[str, float] = {}
    p, g = pred[None, first:].float(), gt[None, first:].float()
    dice = compute_dice(p, g, include_background=True, ignore_empty=False)[0]
    iou = compute_iou(p, g, include_background=True, ignore_empty=False)[0]
    for k, name in enumerate(names[first:]):
        out[f"dice_{name}"] = float(dice[k])
        out[f"iou_{name}"] = float(iou[k])
        if hd:
            out[f"hd95_{name}"] = hd95(pred[first + k], gt[first + k], spacing)
    out["dice_mean"] = float(dice.mean())
    out["iou_mean"] = float(iou.mean())
    if hd:
        out["hd95_mean"] = float(np.mean([out[f"hd95_{n}"] for n in names[first:]]))
    out["pixel_accuracy"] = float((pred == gt).all(0).float().mean()) if task == "labels" else \
        float((pred == gt).float().mean())
    onehot = gt.float()
    out["mse"] = float(((probs - onehot) ** 2).mean())
    if task == "binary":
        voxel_ml = float(np.prod(list(spacing)[-pred.ndim + 1:])) / 1000.0
        out["abs_volume_diff_ml"] = abs(int(pred[0].sum()) - int(gt[0].sum())) * voxel_ml
        out.update(lesion_stats(pred[0].numpy(), gt[0].numpy()))
    return out


def label_map_dice(pred: np.ndarray, truth: np.ndarray, task: str, meta: Mapping) -> dict[str, float]:
    """Dice per output (BraTS regions, classes) of two label maps in the dataset's values, plus their mean.

    Both maps are encoded with the task's own target encoding, so a served mask (in the input grid) is scored
    exactly as validation scores logits; empty prediction and empty truth = 1, as in `case_metrics`.
    """
    names = output_names(task, meta)
    p, t = encode_target(pred, task, meta), encode_target(truth, task, meta)
    if activation(task) == "softmax":
        k = len(names)
        p = torch.nn.functional.one_hot(p[0], k).movedim(-1, 0)[1:]
        t = torch.nn.functional.one_hot(t[0], k).movedim(-1, 0)[1:]
        names = names[1:]
    dice = compute_dice(p[None].float(), t[None].float(), include_background=True, ignore_empty=False)[0]
    out = {name: float(d) for name, d in zip(names, dice)}
    out["mean"] = float(dice.mean())
    return out


class MetricAccumulator:
    """Collects per-case metric dicts; `aggregate()` → `val/<name>` means (NaNs ignored); `reset()` clears."""

    def __init__(self, prefix: str = "val/") -> None:
        self.prefix = prefix
        self._values: dict[str, list[float]] = defaultdict(list)
        self.cases: list[dict[str, float]] = []

    def add(self, metrics: Mapping[str, float]) -> None:
        self.cases.append(dict(metrics))
        for k, v in metrics.items():
            self._values[k].append(float(v))

    def aggregate(self) -> dict[str, float]:
        out = {}
        for k, vs in self._values.items():
            arr = np.asarray(vs, dtype=np.float64)
            arr = arr[np.isfinite(arr)]
            out[f"{self.prefix}{k}"] = float(arr.mean()) if arr.size else float("nan")
        return out

    def reset(self) -> None:
        self._values.clear()
        self.cases.clear()

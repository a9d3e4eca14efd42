"""Uncertainty of a prediction: voxel-wise predictive entropy, TTA member variance and a per-case score.

The entropy is of the (member-mean) class probabilities the mask is decoded from, so a voxel the model is sure of
scores ~0 and a coin flip scores the maximum (ln K for softmax tasks, K·ln 2 for K sigmoid channels). The case
score is the mean entropy over the predicted foreground — where a wrong answer matters — or, when nothing is
predicted, over the scan's nonzero region, so an input that makes the model give up still scores.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from voxray.training.tasks import activate, activation

__all__ = ["predictive_entropy", "max_entropy", "member_variance", "case_score"]

_EPS = 1e-7


def predictive_entropy(probs: torch.Tensor, task: str) -> torch.Tensor:
    """Entropy in nats (*S) of class probabilities (K, *S): categorical for softmax tasks, the sum of the channels'
    Bernoulli entropies for sigmoid tasks."""
    p = probs.float().clamp(_EPS, 1.0)
    if activation(task) == "softmax":
        return -(p * p.log()).sum(0)
    q = (1.0 - probs.float()).clamp(_EPS, 1.0)
    return -(p * p.log() + q * q.log()).sum(0)


def max_entropy(task: str, channels: int) -> float:
    """The largest possible entropy: the scale a score is read against."""
    return math.log(channels) if activation(task) == "softmax" else channels * math.log(2.0)


def member_variance(variance: torch.Tensor) -> torch.Tensor:
    """Per-voxel variance across TTA members (*S): the class probabilities' variance averaged over classes."""
    return variance.float().mean(0)


def case_score(logits: torch.Tensor, label: np.ndarray, body: torch.Tensor | np.ndarray | None,
               task: str) -> dict[str, Any]:
    """{"score", "region", "voxels", "max_entropy"}: mean predictive entropy of `logits` (K, *S) over the predicted
    foreground (label > 0), else over `body` (the input's nonzero voxels), else the whole grid; all on the model
    grid. Only the region's voxels are activated, so the score costs little beside the mask."""
    fg = np.asarray(label) > 0
    if fg.any():
        region, sel = "foreground", fg
    elif body is not None and np.asarray(body).any():
        region, sel = "body", np.asarray(body, dtype=bool)
    else:
        region, sel = "all", np.ones(fg.shape, dtype=bool)
    ent = predictive_entropy(activate(logits[:, torch.from_numpy(sel)], task), task)
    return {"score": round(float(ent.mean()), 6), "region": region, "voxels": int(sel.sum()),
            "max_entropy": round(max_entropy(task, int(logits.shape[0])), 6)}

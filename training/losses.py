"""Segmentation losses (MONAI) with deep supervision.

Sigmoid tasks (brats_regions, binary, multilabel) use squared sigmoid Dice and per-channel BCE-with-logits.
This deliberately deviates from the Factorizer code, whose MONAI DiceCELoss applied *softmax* CE across the
overlapping region channels (see reference §6): BCE matches the sigmoid outputs. `labels` uses softmax Dice + CE.
Deep supervision: weights 1, 1/2, 1/4, … normalised to sum 1, targets nearest-downsampled to each head.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss
from torch import nn

from voxray.platform.specs.train import LossSpec
from voxray.training.tasks import activation

__all__ = ["build_loss", "DeepSupervisionLoss", "SigmoidDiceBCELoss", "deep_supervision_weights"]


class SigmoidDiceBCELoss(nn.Module):
    """Squared sigmoid Dice + per-channel BCE-with-logits (either part can be switched off by weight 0)."""

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        if dice_weight < 0 or bce_weight < 0 or dice_weight + bce_weight == 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got dice={dice_weight} bce={bce_weight}")
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, include_background=True, smooth_nr=1e-5,
                             smooth_dr=1e-5)
        self.dice_weight, self.bce_weight = dice_weight, bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros(())
        if self.dice_weight:
            loss = loss + self.dice_weight * self.dice(logits, target)
        if self.bce_weight:
            loss = loss + self.bce_weight * F.binary_cross_entropy_with_logits(logits, target)
        return loss


class _SoftmaxCE(nn.Module):
    """Cross-entropy on class-index targets shaped (B, 1, *S), like MONAI's losses expect."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target[:, 0].long())


def _base_loss(name: str, task: str) -> nn.Module:
    if activation(task) == "sigmoid":
        table = {"dice": lambda: SigmoidDiceBCELoss(1.0, 0.0), "ce": lambda: SigmoidDiceBCELoss(0.0, 1.0),
                 "dice_ce": SigmoidDiceBCELoss, "focal": lambda: FocalLoss(use_softmax=False),
                 "dice_focal": lambda: DiceFocalLoss(sigmoid=True, squared_pred=True)}
    else:
        table = {"dice": lambda: DiceLoss(softmax=True, to_onehot_y=True),
                 "ce": _SoftmaxCE,
                 "dice_ce": lambda: DiceCELoss(softmax=True, to_onehot_y=True),
                 "focal": lambda: FocalLoss(use_softmax=True, to_onehot_y=True),
                 "dice_focal": lambda: DiceFocalLoss(softmax=True, to_onehot_y=True)}
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(table)}")
    return table[name]()


def deep_supervision_weights(n: int, weights: Sequence[float] | None = None) -> list[float]:
    """Normalised head weights: given ones (first n), or 1, 1/2, 1/4, … (3 heads → 4/7, 2/7, 1/7)."""
    raw = list(weights[:n]) if weights else [0.5 ** i for i in range(n)]
    if len(raw) < n:
        raise ValueError(f"{n} deep-supervision heads but only {len(raw)} weights given: {list(weights or [])}")
    total = sum(raw)
    if total <= 0 or any(w < 0 for w in raw):
        raise ValueError(f"deep-supervision weights must be >= 0 with a positive sum, got {raw}")
    return [w / total for w in raw]


class DeepSupervisionLoss(nn.Module):
    """Applies `base` to one logits tensor, or a weighted sum over a list [full, 1/2, 1/4, …] of heads."""

    def __init__(self, base: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.base, self.weights = base, weights

    def forward(self, out: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, (list, tuple)):
            return self.base(out.float(), target)
        total = out[0].new_zeros((), dtype=torch.float32)
        for w, logits in zip(deep_supervision_weights(len(out), self.weights), out):
            t = target
            if logits.shape[2:] != target.shape[2:]:
                t = F.interpolate(target.float(), size=logits.shape[2:], mode="nearest").to(target.dtype)
            total = total + w * self.base(logits.float(), t)
        return total


def build_loss(spec: LossSpec, task: str) -> DeepSupervisionLoss:
    """The spec's loss for `task`, deep-supervision aware."""
    return DeepSupervisionLoss(_base_loss(spec.name, task), spec.deep_supervision_weights)

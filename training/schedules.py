"""Learning-rate schedules as per-step multiplicative factors on the peak lr (torch LambdaLR).

warmup_cosine (the Factorizer recipe, for warm-up 2k / 100k steps): factor 0 at step 0, 0.5 at 1000, 1 at 2000,
0.5 at 51000, 0 at 100000. `cosine` is the same without warm-up, `poly` is nnU-Net's (1 - t)^power.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from voxray.platform.specs.train import ScheduleSpec

__all__ = ["lr_factor", "build_scheduler"]


def lr_factor(step: int, spec: ScheduleSpec, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based) of `total_steps`."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    step = min(max(step, 0), total_steps)
    if spec.name == "constant":
        return 1.0
    if spec.name == "poly":
        return (1.0 - step / total_steps) ** spec.power
    warmup = spec.warmup_steps if spec.name == "warmup_cosine" else 0
    warmup = min(warmup, total_steps - 1)
    if step < warmup:
        return step / warmup
    progress = (step - warmup) / max(total_steps - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, spec: ScheduleSpec, total_steps: int) -> LambdaLR:
    """A LambdaLR stepping once per optimiser step."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, spec, total_steps))

"""Learning-rate schedules as per-step multiplicative factors on the peak lr (torch LambdaLR).

warmup_cosine (the Factorizer recipe, for warm-up 2k / 100k steps): factor 0 at step 0, 0.5 at 1000, 1 at 2000,
0.5 at 51000, 0 at 100000. `cosine` is the same without warm-up, `poly` is nnU-Net's (1 - t)^power.

The factor is an `LrPlan` object rather than a lambda, so LambdaLR saves it with the scheduler state: a resumed run
keeps the schedule it was started with. When `train.steps` differs from the plan's end on resume (steps raised on a
finished run, or changed mid-run), `restore_scheduler` appends a tail from the current factor instead of letting the
lr jump onto the re-stretched schedule (nnU-Net's poly lr jumps when its epoch count is raised). A param group with
`frozen_until: N` (a frozen encoder, see `training.init`) gets factor 0 for its first N steps.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from voxray.platform.specs.train import ScheduleSpec

log = logging.getLogger(__name__)

__all__ = ["lr_factor", "build_scheduler", "restore_scheduler", "LrPlan", "TAIL_WARMUP_FRACTION"]

TAIL_WARMUP_FRACTION = 0.1
"""Share of the added steps over which a tail rises from the current factor to `extend_peak`."""


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


def _decay(t: float, name: str, power: float) -> float:
    """The schedule's decay shape from 1 (t = 0) to 0 (t = 1); constant stays 1."""
    t = min(max(t, 0.0), 1.0)
    if name == "constant":
        return 1.0
    if name == "poly":
        return (1.0 - t) ** power
    return 0.5 * (1.0 + math.cos(math.pi * t))


class LrPlan:
    """The lr factor of one param group: the base schedule over `total` steps, then any tails added on resume.

    Only plain data lives in `__dict__` (LambdaLR saves and restores it with the scheduler's state_dict).
    """

    def __init__(self, spec: ScheduleSpec, total: int, frozen_until: int = 0) -> None:
        self.spec = spec.model_dump(mode="json")
        self.total = int(total)
        self.frozen_until = int(frozen_until)
        self.tails: list[dict[str, float]] = []

    @property
    def end(self) -> int:
        """The step the plan decays to 0 at (the last tail's end, else the base schedule's)."""
        return int(self.tails[-1]["end"]) if self.tails else self.total

    def factor(self, step: int) -> float:
        """Schedule factor at `step`, ignoring freezing."""
        for tail in reversed(self.tails):
            if step >= tail["start"]:
                return _tail_factor(step, tail, self.spec["name"], self.spec["power"])
        return lr_factor(step, ScheduleSpec(**self.spec), self.total)

    def __call__(self, step: int) -> float:
        return 0.0 if step < self.frozen_until else self.factor(step)

    def extend(self, step: int, new_end: int, peak: float) -> dict[str, float]:
        """Continue from `step` to `new_end`: from the current factor up to max(current, peak) over
        TAIL_WARMUP_FRACTION of the added steps, then the schedule's decay to 0 at `new_end`."""
        start_factor = self.factor(step)
        top = max(start_factor, peak) if self.spec["name"] != "constant" else start_factor
        warm = math.ceil(TAIL_WARMUP_FRACTION * (new_end - step)) if top > start_factor else 0
        tail = {"start": step, "end": new_end, "from": start_factor, "peak": top, "warmup": warm}
        self.tails.append(tail)
        return tail


def _tail_factor(step: int, tail: Mapping[str, float], name: str, power: float) -> float:
    start, end, warm = tail["start"], tail["end"], tail["warmup"]
    if step < start + warm:
        return tail["from"] + (tail["peak"] - tail["from"]) * (step - start) / warm
    return tail["peak"] * _decay((step - start - warm) / max(end - start - warm, 1), name, power)


def build_scheduler(optimizer: Optimizer, spec: ScheduleSpec, total_steps: int) -> LambdaLR:
    """A LambdaLR stepping once per optimiser step; one `LrPlan` per param group (`frozen_until` from the group)."""
    plans = [LrPlan(spec, total_steps, g.get("frozen_until", 0)) for g in optimizer.param_groups]
    return LambdaLR(optimizer, plans)


def restore_scheduler(scheduler: LambdaLR, state: Mapping[str, Any], *, step: int, total_steps: int,
                      spec: ScheduleSpec) -> None:
    """Load a saved scheduler state; when `total_steps` differs from the saved plan's end, add a tail (logged).

    A checkpoint from before plans were saved (its lr_lambdas are None) keeps the plan built from the current spec.
    """
    scheduler.load_state_dict(dict(state))
    plans = [p for p in scheduler.lr_lambdas if isinstance(p, LrPlan)]
    if not plans or step >= total_steps or all(p.end == total_steps for p in plans):
        return
    old_end = plans[0].end
    for plan in plans:
        tail = plan.extend(step, total_steps, spec.extend_peak)
    why = "the run had finished" if step >= old_end else f"the run was at step {step} of {old_end}"
    log.info("train.steps changed from %d to %d (%s): the learning rate continues from its current factor %.4g, "
             "rises to %.4g over %d steps and decays (%s) to 0 at step %d, instead of jumping to %.4g on the "
             "re-stretched schedule", old_end, total_steps, why, tail["from"], tail["peak"], int(tail["warmup"]),
             plans[0].spec["name"], total_steps, lr_factor(step, spec, total_steps))

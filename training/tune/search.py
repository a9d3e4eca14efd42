"""Tune plumbing from the `tune` spec: search algorithm (random, grid, Optuna TPE), scheduler (FIFO, ASHA on
training steps) and the step budget ASHA measures trials against."""

from __future__ import annotations

from typing import Any

from voxray.platform.specs.train import TrainSpec
from voxray.platform.specs.tune import TuneSpec
from voxray.training.tune.space import SearchSpace

TIME_ATTR = "step"
"""ASHA's clock: the optimiser step every Train report carries (validations land on multiples of
`train.validation.every`)."""


def max_steps(base: TrainSpec, space: SearchSpace) -> int:
    """The longest trial in optimiser steps (a space over `train.steps` widens it)."""
    dom = next((d for d in space.domains if d.path == "train.steps"), None)
    if dom is None:
        return base.steps
    if dom.categorical:
        return max(int(v) for v in dom.args)
    return int(dom.args[1]) - (1 if dom.kind == "randint" else 0)


def validation_every(base: TrainSpec, space: SearchSpace) -> int:
    """Steps between validations (the largest if the space varies it, so the grace period holds for all)."""
    dom = next((d for d in space.domains if d.path == "train.validation.every"), None)
    if dom is None:
        return base.validation.every
    return max(int(v) for v in dom.probes())


def build_search(spec: TuneSpec, seed: int) -> Any:
    """Optuna TPE (seeded) or Tune's variant generator (random sampling and grid enumeration)."""
    if spec.search == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def build_scheduler(spec: TuneSpec, base: TrainSpec, space: SearchSpace) -> Any:
    """FIFO, or ASHA on optimiser steps: a trial is first judged after `grace_period` validations."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.name == "fifo":
        return FIFOScheduler()
    budget = max_steps(base, space)
    grace = min(budget, spec.scheduler.grace_period * validation_every(base, space))
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=budget, grace_period=grace,
                         reduction_factor=spec.scheduler.reduction_factor)

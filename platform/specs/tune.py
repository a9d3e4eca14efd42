"""The `tune` section: a Ray Tune sweep whose trials are Ray Train runs of the `train` section."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from voxray.platform.specs.common import ArtifactPath, StrictModel

DOMAINS = ("uniform", "loguniform", "randint", "choice", "grid")


class SchedulerSpec(StrictModel):
    name: Literal["asha", "fifo"] = "asha"
    """ASHA stops weak trials early (on training steps); FIFO runs every trial to the end."""
    grace_period: int = Field(default=1, ge=1)
    """Validations a trial gets before ASHA may stop it."""
    reduction_factor: float = Field(default=2.0, gt=1)
    """ASHA halving rate."""


class TuneSpec(StrictModel):
    space: dict[str, dict[str, Any]]
    """Dotted train-spec path → domain, e.g. `train.optimizer.lr: {loguniform: [1.0e-5, 1.0e-3]}`.
    Domains: uniform [lo, hi], loguniform [lo, hi], randint [lo, hi), choice [values], grid [values]."""
    num_samples: int = Field(default=8, ge=1)
    """Trials to sample (grid domains multiply it)."""
    max_concurrent: int = Field(default=2, ge=1)
    """Trials running at once."""
    scheduler: SchedulerSpec = SchedulerSpec()
    search: Literal["random", "grid", "optuna"] = "optuna"
    """Search algorithm: random sampling, grid, or Optuna TPE."""
    metric: str = "val/dice_mean"
    """Metric reported by trials that ranks them."""
    mode: Literal["max", "min"] = "max"
    """Whether larger `metric` is better."""
    trial_cpus: float = Field(default=0.01, gt=0)
    """CPUs held by each trial's driver (its Ray Train workers reserve their own)."""
    output: ArtifactPath = "work/tune"
    """Sweep directory (Tune experiment, results table, plots, best YAML)."""
    export_best: bool = True
    """Export the best trial's model to the registry."""

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not space:
            raise ValueError("space is empty: give at least one `train.<field>: {domain: …}`")
        for path, domain in space.items():
            if not path.startswith("train."):
                raise ValueError(f"space key {path!r} must be a dotted train path such as 'train.optimizer.lr'")
            if len(domain) != 1 or next(iter(domain)) not in DOMAINS:
                raise ValueError(f"space[{path!r}] = {domain!r}: give exactly one of {', '.join(DOMAINS)}")
            kind, args = next(iter(domain.items()))
            if kind in ("uniform", "loguniform", "randint"):
                if not (isinstance(args, list) and len(args) == 2 and args[0] < args[1]):
                    raise ValueError(f"space[{path!r}].{kind} = {args!r}: expected [low, high] with low < high")
                if kind == "loguniform" and args[0] <= 0:
                    raise ValueError(f"space[{path!r}].loguniform = {args!r}: bounds must be > 0")
            elif not (isinstance(args, list) and args):
                raise ValueError(f"space[{path!r}].{kind} = {args!r}: expected a non-empty list of values")
        return space

    @model_validator(mode="after")
    def _grid_needs_grid_search(self) -> "TuneSpec":
        has_grid = any("grid" in d for d in self.space.values())
        if self.search == "optuna" and has_grid:
            raise ValueError("grid domains need search 'grid' or 'random' (Optuna samples; it cannot enumerate a grid)")
        return self

"""Sweep results: a ranked trial table (CSV + parquet), metric-vs-step and params-vs-metric plots, the best trial
as a ready-to-run train YAML, and MLflow (one parent run, a child run per trial).

Everything here works on plain rows and per-trial histories (lists of dicts) taken from Tune's ResultGrid by
`collect`, so it is testable without Ray and rerunnable on a restored experiment.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxray.platform.specs.job import TrainJob
from voxray.platform.specs.loader import dump_job
from voxray.platform.specs.train import TrainSpec
from voxray.training.tune.space import SearchSpace, label

log = logging.getLogger(__name__)

STEP = "step"
SHOWN_METRICS = ("val/dice_mean", "val/iou_mean", "val/pixel_accuracy", "val/mse")
"""Metrics shown next to the ranking metric when trials report them (the seed-002 comparison columns)."""


@dataclass
class TrialOutcome:
    """One trial as the report needs it."""

    trial_id: str
    params: dict[str, Any]
    """`{dotted path: spec value}` sampled for the trial."""
    history: list[dict[str, Any]]
    """Every result the trial reported (one per validation), oldest first."""
    status: str = "TERMINATED"
    error: str | None = None
    checkpoint: str | None = None
    """Path of the trial's best Ray Train checkpoint (None when it reported none)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def best(self, metric: str, mode: str) -> dict[str, Any] | None:
        """The reported result with the best finite `metric`, or None."""
        rows = [r for r in self.history if _finite(r.get(metric))]
        if not rows:
            return None
        pick = max if mode == "max" else min
        return pick(rows, key=lambda r: r[metric])

    def last_step(self) -> int | None:
        steps = [r[STEP] for r in self.history if STEP in r]
        return int(steps[-1]) if steps else None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def collect(result_grid: Any, space: SearchSpace) -> list[TrialOutcome]:
    """TrialOutcomes from a Tune `ResultGrid` (histories from each trial's metrics dataframe)."""
    outcomes = []
    for res in result_grid:
        df = res.metrics_dataframe
        history = [] if df is None else [{k: _plain(v) for k, v in row.items()} for row in df.to_dict("records")]
        config = {k: v for k, v in (res.config or {}).items() if k in space.paths}
        metrics = res.metrics or {}
        outcomes.append(TrialOutcome(
            trial_id=str(metrics.get("trial_id") or Path(res.path).name),
            params=space.decode(config), history=history,
            status="ERROR" if res.error else "TERMINATED", error=str(res.error)[:300] if res.error else None,
            checkpoint=metrics.get("checkpoint_path")))
    return outcomes


def _plain(v: Any) -> Any:
    """numpy scalars → Python, NaN kept as float."""
    return v.item() if hasattr(v, "item") else v


def rank(outcomes: list[TrialOutcome], metric: str, mode: str, max_steps: int) -> list[dict[str, Any]]:
    """Table rows, best first: rank, trial, params, best metric (and its step), last step, stopped early."""
    rows = []
    for o in outcomes:
        best = o.best(metric, mode)
        last = o.last_step()
        row: dict[str, Any] = {"trial": o.trial_id, "status": o.status}
        row.update({p: label(v) for p, v in o.params.items()})
        row[metric] = best[metric] if best else float("nan")
        row["best_step"] = best.get(STEP) if best else None
        row["last_step"] = last
        row["stopped_early"] = bool(o.status != "ERROR" and last is not None and last < max_steps)
        for m in SHOWN_METRICS:
            if m != metric and best is not None and m in best:
                row[m] = best[m]
        if o.error:
            row["error"] = o.error
        rows.append(row)
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (not _finite(r[metric]), sign * r[metric] if _finite(r[metric]) else 0.0))
    for i, row in enumerate(rows, 1):
        row["rank"] = i
    return [{"rank": r.pop("rank"), **r} for r in rows]


def write_tables(rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """tune_results.csv and tune_results.parquet (same columns; values as shown in the table)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    data = {c: [_cell(r.get(c)) for r in rows] for c in columns}
    table = pa.table(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "tune_results.csv", "parquet": out_dir / "tune_results.parquet"}
    pacsv.write_csv(table, paths["csv"])
    pq.write_table(table, paths["parquet"])
    return paths


def _cell(v: Any) -> Any:
    """Mixed-type columns (a choice over numbers and strings) become strings so Arrow can type them."""
    return v if v is None or isinstance(v, (bool, int, float)) else str(v)


def best_train_job(name: str, trial_spec: TrainSpec, base: TrainSpec, ray: Any) -> TrainJob:
    """The best trial as a standalone train job: the trial's exact spec (same seed, same checkpoint metric),
    exporting its model and tracking like the base spec."""
    spec = trial_spec.model_copy(update={"export": True, "tracking": base.tracking,
                                         "output": base.output})
    return TrainJob(name=name, ray=ray, train=spec)


def write_best_yaml(job: TrainJob, path: Path, trial: TrialOutcome, metric: str, mode: str) -> Path:
    """`best_train.yaml`: `voxray run` it to retrain the winner from scratch."""
    best = trial.best(metric, mode) or {}
    header = (f"# best trial {trial.trial_id} of the sweep ({metric} = {best.get(metric)!r} at step "
              f"{best.get(STEP)!r})\n# params: {', '.join(f'{k}={label(v)}' for k, v in trial.params.items())}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + dump_job(job))
    return path

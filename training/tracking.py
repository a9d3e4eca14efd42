"""Run tracking on rank 0: metrics.csv (long format), progress.json (driver progress bar), progress.png,
prediction overlay PNGs, and MLflow (a local SQLite store
+ artefact folder under the run dir unless `tracking.uri` is set).

Everything is keyed by optimiser step. On resume, rows past the restored step are dropped so curves stay
monotonic after a worker failure.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from voxray.platform.specs.env import redact
from voxray.training.progress import progress_interval

log = logging.getLogger(__name__)

__all__ = ["Tracker", "flatten", "read_metrics", "plot_progress", "save_overlay"]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {"a.b.c": value} (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.csv as dicts {step, name, value}."""
    if not path.exists():
        return []
    with path.open() as f:
        return [{"step": int(r["step"]), "name": r["name"], "value": float(r["value"])} for r in csv.DictReader(f)]


def plot_progress(rows: list[dict[str, Any]], out: Path) -> None:
    """progress.png: training loss (left) and validation Dice curves with the per-voxel baseline (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_v) = plt.subplots(1, 2, figsize=(10, 4))
    loss = [(r["step"], r["value"]) for r in rows if r["name"] == "train/loss"]
    if loss:
        ax_l.plot(*zip(*loss), lw=0.8)
    ax_l.set(title="training loss", xlabel="step", yscale="log" if loss and min(v for _, v in loss) > 0 else "linear")
    names = sorted({r["name"] for r in rows if r["name"].startswith("val/dice")})
    for name in names:
        pts = [(r["step"], r["value"]) for r in rows if r["name"] == name]
        ax_v.plot(*zip(*pts), marker="o", ms=3, label=name[4:], lw=2 if name == "val/dice_mean" else 1)
    base = [r["value"] for r in rows if r["name"] == "baseline/dice_mean"]
    if base:  # the non-learned reference on the same validation cases
        ax_v.axhline(base[-1], color="grey", ls="--", lw=1.5, label="per-voxel baseline (mean)")
    ax_v.set(title="validation", xlabel="step", ylim=(0, 1))
    if names or base:
        ax_v.legend(fontsize=7)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)


def save_overlay(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, out: Path, title: str = "") -> None:
    """Side-by-side PNG of one stored axial slice (rows → A, columns → R): ground truth (left) and prediction
    (right) in the viewer's class colours, radiological, with R/L/A/P markers (voxray.preprocessing.overlay)."""
    from voxray.preprocessing.overlay import render_axial, stored_axial

    render_axial(stored_axial(image), [(stored_axial(gt), "ground truth"), (stored_axial(pred), "prediction")],
                 out, title, panel_size=3.0, dpi=80)


class Tracker:
    """Rank-0 sink for metrics and artefacts of one run directory."""

    def __init__(self, run_dir: Path, *, mlflow_enabled: bool = True, uri: str | None = None,
                 experiment: str = "voxray", params: Mapping[str, Any] | None = None, start_step: int = 0) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self._truncate(start_step)
        self._t0, self._last_progress = time.monotonic(), 0.0
        self._throttle = min(0.5, progress_interval())
        self._train_state: dict[str, Any] = {"phase": "train", "step": start_step, "total": 0, "loss": float("nan"),
                                             "lr": 0.0, "it_s": 0.0}
        self.mlflow = None
        if mlflow_enabled:
            self._start_mlflow(uri, experiment, params or {})

    def _truncate(self, start_step: int) -> None:
        rows = [r for r in read_metrics(self.csv_path) if r["step"] <= start_step]
        with self.csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "name", "value"])
            w.writerows([[r["step"], r["name"], r["value"]] for r in rows])

    def _start_mlflow(self, uri: str | None, experiment: str, params: Mapping[str, Any]) -> None:
        import mlflow

        # Default: SQLite under the run dir (MLflow 3 keeps its file store in maintenance mode), artefacts beside it.
        mlflow.set_tracking_uri(uri or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}")
        if mlflow.get_experiment_by_name(experiment) is None:
            location = None if uri else (self.run_dir / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(experiment, artifact_location=location)
        mlflow.set_experiment(experiment)
        id_file = self.run_dir / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else None
        run = mlflow.start_run(run_id=run_id, run_name=self.run_dir.name)
        if run_id is None:
            id_file.write_text(run.info.run_id)
            flat = {k: redact(str(v))[:500] for k, v in flatten(params).items()}
            mlflow.log_params(flat)
        self.mlflow = mlflow
        self.run_id = run.info.run_id

    def log(self, step: int, metrics: Mapping[str, float], *, mlflow: bool = True) -> None:
        """Append finite-or-not values to metrics.csv and (optionally) MLflow."""
        with self.csv_path.open("a", newline="") as f:
            csv.writer(f).writerows([[step, k, float(v)] for k, v in metrics.items()])
        if mlflow and self.mlflow is not None:
            finite = {k.replace("/", "_"): float(v) for k, v in metrics.items() if np.isfinite(v)}
            self.mlflow.log_metrics(finite, step=step)

    def progress(self, step: int, total: int, loss: float, lr: float, its: float, *, force: bool = False) -> None:
        """progress.json for the driver's progress display (written at most twice a second, or every step when
        `VOXRAY_PROGRESS_INTERVAL` is 0)."""
        now = time.monotonic()
        if not force and now - self._last_progress < self._throttle:
            return
        self._last_progress = now
        self._train_state = {"phase": "train", "step": step, "total": total, "loss": loss, "lr": lr, "it_s": its}
        self._write_progress(self._train_state)

    def validation_progress(self, step: int, done: int, total: int) -> None:
        """progress.json while validating: `done` of `total` cases (long sliding-window validations show up)."""
        self._write_progress({**self._train_state, "phase": "validate", "step": step, "val_done": done,
                              "val_total": total})
        if done == total:  # back to the training figures, so the driver's last line is not a stale "validate"
            self._write_progress({**self._train_state, "step": step})

    def _write_progress(self, payload: Mapping[str, Any]) -> None:
        tmp = self.run_dir / "progress.json.tmp"
        tmp.write_text(json.dumps(payload))
        tmp.replace(self.run_dir / "progress.json")

    def plot(self) -> None:
        plot_progress(read_metrics(self.csv_path), self.run_dir / "progress.png")
        self.artifact(self.run_dir / "progress.png")

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if self.mlflow is not None and path.exists():
            self.mlflow.log_artifact(str(path), artifact_path=folder)

    def close(self, status: str = "FINISHED") -> None:
        if self.mlflow is not None:
            self.mlflow.end_run(status=status)
            self.mlflow = None

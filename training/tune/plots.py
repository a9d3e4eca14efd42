"""Sweep plots: the ranking metric vs training step per trial (early-stopped trials end short), and one scatter
per searched parameter against the metric (categorical values on a labelled axis, log axis for loguniform)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voxray.training.tune.results import STEP, TrialOutcome, _finite
from voxray.training.tune.space import SearchSpace


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_histories(outcomes: list[TrialOutcome], metric: str, out: Path, *, max_steps: int) -> Path:
    """metric_vs_step.png: one line per trial; a cross marks where ASHA (or an error) stopped a trial."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for o in outcomes:
        pts = [(r[STEP], r[metric]) for r in o.history if STEP in r and _finite(r.get(metric))]
        if not pts:
            continue
        line, = ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, label=o.trial_id[-12:])
        if pts[-1][0] < max_steps:
            ax.plot(*pts[-1], marker="x", ms=9, color=line.get_color())
    ax.set(xlabel="training step", ylabel=metric, title=f"{metric} per trial (x = stopped early)")
    if outcomes:
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, plt, out)


def plot_params(rows: list[dict[str, Any]], space: SearchSpace, metric: str, out: Path) -> Path:
    """params_vs_metric.png: one scatter panel per searched path (x = value, y = the trial's best metric)."""
    plt = _pyplot()
    n = len(space.domains)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
    good = [r for r in rows if _finite(r.get(metric))]
    for ax, dom in zip(axes[0], space.domains):
        ys = [r[metric] for r in good]
        if dom.categorical:
            cats = dom.labels()
            xs = [cats.index(r[dom.path]) if r.get(dom.path) in cats else -1 for r in good]
            ax.set_xticks(range(len(cats)), [str(c)[:18] for c in cats], rotation=30, ha="right", fontsize=7)
        else:
            xs = [float(r[dom.path]) for r in good]
            if dom.kind == "loguniform":
                ax.set_xscale("log")
        ax.scatter(xs, ys, c=[r["rank"] for r in good], cmap="viridis", s=30)
        ax.set(xlabel=dom.path.removeprefix("train."), ylabel=metric)
    fig.suptitle(f"search space vs {metric} (darker = better rank)", fontsize=9)
    return _save(fig, plt, out)


def _save(fig: Any, plt: Any, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


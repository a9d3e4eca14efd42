"""Ranking, tables, plots, best YAML and MLflow logging from hand-made trial outcomes (no Ray)."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest

from voxray.platform.specs.loader import load_job
from voxray.platform.specs.train import TrainSpec
from voxray.training.tune.driver import trial_train_spec
from voxray.training.tune.plots import plot_histories, plot_params
from voxray.training.tune.results import TrialOutcome, best_train_job, rank, write_best_yaml, write_tables
from voxray.training.tune.space import SearchSpace

M = "val/dice_mean"
SPACE = SearchSpace({"train.optimizer.lr": {"loguniform": [1e-4, 1e-2]},
                     "train.channels": {"choice": [["FLAIR"], ["FLAIR", "T1w"]]}})


def _trial(tid, lr, ch, dices, steps_per=2):
    hist = [{"step": steps_per * (i + 1), M: d, "val/mse": 1 - d} for i, d in enumerate(dices)]
    return TrialOutcome(trial_id=tid, params={"train.optimizer.lr": lr, "train.channels": ch}, history=hist)


@pytest.fixture
def outcomes():
    return [_trial("t1", 1e-3, ["FLAIR"], [0.2, 0.5, 0.6]),       # full run, best
            _trial("t2", 1e-4, ["FLAIR", "T1w"], [0.1]),           # stopped early by ASHA
            _trial("t3", 5e-3, ["FLAIR"], [0.3, 0.55, 0.4]),
            TrialOutcome("t4", {"train.optimizer.lr": 2e-3, "train.channels": ["FLAIR"]}, [], status="ERROR",
                         error="boom")]


def test_rank_orders_by_best_metric_and_flags_early_stops(outcomes):
    rows = rank(outcomes, M, "max", max_steps=6)
    assert [r["trial"] for r in rows] == ["t1", "t3", "t2", "t4"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert rows[0][M] == 0.6 and rows[0]["best_step"] == 6 and not rows[0]["stopped_early"]
    assert rows[1][M] == 0.55 and rows[1]["best_step"] == 4
    assert rows[2]["stopped_early"] and rows[2]["last_step"] == 2
    assert math.isnan(rows[3][M]) and rows[3]["error"] == "boom"
    assert rows[0]["train.channels"] == "[FLAIR]" and rows[0]["val/mse"] == pytest.approx(0.4)
    assert [r["trial"] for r in rank(outcomes, M, "min", 6)][:3] == ["t2", "t1", "t3"]


def test_tables_plots_and_best_yaml(outcomes, tmp_path):
    rows = rank(outcomes, M, "max", max_steps=6)
    paths = write_tables(rows, tmp_path)
    table = pq.read_table(paths["parquet"])
    assert table.num_rows == 4 and table.column("trial").to_pylist()[0] == "t1"
    assert paths["csv"].read_text().splitlines()[0].startswith('"rank","trial"')
    for png in (plot_histories(outcomes, M, tmp_path / "h.png", max_steps=6),
                plot_params(rows, SPACE, M, tmp_path / "p.png")):
        assert png.read_bytes()[:4] == b"\x89PNG"
    base = TrainSpec(store=str(tmp_path / "s.zarr"), model={"name": "unet_depth", "depth": 2}, patch=[32, 32],
                     export=False)
    trial = trial_train_spec(base, outcomes[0].params, metric="val/mse", mode="min")
    job = best_train_job("sweep-best", trial, base, ray={"num_cpus": 2})
    out = write_best_yaml(job, tmp_path / "best_train.yaml", outcomes[0], M, "max")
    assert "best trial t1" in out.read_text().splitlines()[0]
    loaded = load_job(out)
    assert loaded.kind == "train" and loaded.train.channels == ["FLAIR"] and loaded.train.export
    assert loaded.train.optimizer.lr == pytest.approx(1e-3) and loaded.train.store == str(tmp_path / "s.zarr")
    assert loaded.train.checkpoint.metric == "val/mse" and loaded.train.checkpoint.mode == "min"
    assert loaded.train.tracking.mlflow  # trials skip MLflow; the standalone rerun tracks like the base


@pytest.mark.slow
def test_mlflow_parent_with_child_runs(outcomes, tmp_path):
    from mlflow.tracking import MlflowClient

    from voxray.training.tune.tracking import default_uri, log_sweep

    rows = rank(outcomes, M, "max", max_steps=6)
    kw = dict(tune_dir=tmp_path, experiment="sweep", uri=None, metric=M,
              space_yaml={"train.optimizer.lr": {"loguniform": [1e-4, 1e-2]}})
    log_sweep(outcomes, rows, **kw)
    pid = log_sweep(outcomes, rows, **kw)  # a rerun replaces, never duplicates
    client = MlflowClient(tracking_uri=default_uri(tmp_path))
    exp = client.get_experiment_by_name("sweep")
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{pid}'")
    assert len(children) == 4
    t1 = next(r for r in children if r.info.run_name == "t1")
    assert t1.data.params["channels"] == "[FLAIR]"
    hist = client.get_metric_history(t1.info.run_id, M)
    assert [(h.step, h.value) for h in hist] == [(2, 0.2), (4, 0.5), (6, 0.6)]
    assert client.get_run(pid).data.tags["best_trial"] == "t1"
    assert len(client.search_runs([exp.experiment_id])) == 5

"""End to end on a synthetic store, through real `voxray run` processes (each with its own embedded Ray):

an ASHA + Optuna sweep of 6 Ray Train trials, 2 at a time, is SIGKILLed once a trial has finished, rerun (restored
with Tuner.restore, finished trials untouched), then checked for early stops, the ranked results, plots, MLflow,
the exported model, and that `voxray run best_train.yaml` reproduces the winner's validation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.slow

VOXRAY = str(Path(sys.executable).parent / "voxray")
METRIC = "val/mse"  # continuous (no ties at 0 like an early Dice), so ASHA's cut is decisive
NAME = "sweep-e2e"


def _job(tmp: Path, data: Path) -> dict:
    return {
        "kind": "pipeline", "name": NAME, "ray": {"num_cpus": 2},
        "preprocess": {"dataset": {"layout": "msd_brats", "root": str(data)}, "store": str(tmp / "store.zarr"),
                       "spacing": [1.0, 1.0, 1.0], "fg_samples_per_class": 50, "chunk": [16, 16, 16]},
        "train": {"task": "labels", "model": {"name": "unet_depth", "depth": 2, "base_channels": 4},
                  "patch": [16, 16], "batch_size": 2, "steps": 8, "schedule": {"name": "constant"},
                  "sampling": {"loader_workers": 0, "slice_mode": "most_populated"}, "augment": {"enabled": False},
                  "validation": {"every": 2, "folds": 2, "max_cases": 1}, "checkpoint": {"every": 2, "keep": 1},
                  "scaling": {"num_workers": 1, "cpus_per_worker": 0.5}, "tracking": {"mlflow": True},
                  "output": str(tmp / "runs"), "registry": str(tmp / "registry")},
        "tune": {"space": {"train.optimizer.lr": {"loguniform": [1.0e-4, 5.0e-2]},
                           "train.channels": {"choice": [["FLAIR"], ["FLAIR", "T1w", "t1gd", "T2w"]]}},
                 "num_samples": 6, "max_concurrent": 2, "search": "optuna", "metric": METRIC, "mode": "min",
                 "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
                 "output": str(tmp / "tune")},
    }


def _env() -> dict[str, str]:
    """The subprocess gets its own embedded Ray, never the session's."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def _finished_trials(exp: Path) -> dict[str, bytes]:
    """result.json of every trial Tune has marked done."""
    out = {}
    for path in exp.glob("*/result.json"):
        text = path.read_bytes()
        if b'"done": true' in text:
            out[path.parent.name] = text
    return out


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver, then whatever of its embedded Ray outlived it (same process group)."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(3)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run(args: list[str], log: Path, timeout: int) -> None:
    with log.open("w") as fh:
        rc = subprocess.run([VOXRAY, "run", *args], stdout=fh, stderr=subprocess.STDOUT, timeout=timeout,
                            start_new_session=True, env=_env()).returncode
    assert rc == 0, log.read_text()[-4000:]


def test_sweep_is_killed_restored_and_reproduced(tmp_path):
    from voxray.preprocessing.synth import synth_dataset

    data = synth_dataset("msd_brats", tmp_path / "msd", cases=4, seed=0, shape=(24, 24, 16))
    job_yaml = tmp_path / "sweep.yaml"
    job_yaml.write_text(yaml.safe_dump(_job(tmp_path, data)))
    sweep = tmp_path / "tune" / NAME
    exp = sweep / "experiment"

    # 1. first run: SIGKILL as soon as one trial has finished (others still pending or running)
    log1 = (tmp_path / "run1.log").open("w")
    proc = subprocess.Popen([VOXRAY, "run", str(job_yaml)], stdout=log1, stderr=subprocess.STDOUT,
                            start_new_session=True, env=_env())
    deadline = time.monotonic() + 420
    done: dict[str, bytes] = {}
    while time.monotonic() < deadline and proc.poll() is None and not done:
        time.sleep(1)
        done = _finished_trials(exp)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    assert done, (tmp_path / "run1.log").read_text()[-4000:]
    _kill_group(proc)
    assert not (sweep / "summary.json").exists()

    # 2. rerun the same command: restored, completed, finished trials not redone
    _run([str(job_yaml)], tmp_path / "run2.log", timeout=600)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["restored"] is True and summary["trials"] == 6 and summary["errored"] == 0
    assert {k: v for k, v in _finished_trials(exp).items() if k in done} == done
    assert len(list(exp.glob("*/result.json"))) == 6

    # 3. results: early stops visible, ranking, plots, MLflow, exported model
    table = pq.read_table(sweep / "tune_results.parquet").to_pylist()
    assert [r["rank"] for r in table] == list(range(1, 7))
    assert all(r["status"] == "TERMINATED" for r in table)
    assert any(r["stopped_early"] for r in table) and summary["stopped_early"] >= 1
    assert all(r["last_step"] < 8 for r in table if r["stopped_early"])
    values = [r[METRIC] for r in table]
    assert values == sorted(values)
    for png in ("metric_vs_step.png", "params_vs_metric.png"):
        assert (sweep / png).read_bytes()[:4] == b"\x89PNG"
    assert (sweep / "mlflow.db").is_file() and summary["mlflow_parent_run"]
    model = Path(summary["model"])
    card = yaml.safe_load((model / "model.yaml").read_text())
    assert card["source"]["trial"] == table[0]["trial"] == summary["best_trial"]
    assert card["metrics"][METRIC] == pytest.approx(table[0][METRIC])

    # 4. the best YAML retrains the winner: same validation at the same step
    best_yaml = Path(summary["best_yaml"])
    _run([str(best_yaml)], tmp_path / "run3.log", timeout=400)
    best = yaml.safe_load(best_yaml.read_text())
    rows = (tmp_path / "runs" / best["name"] / "metrics.csv").read_text().splitlines()[1:]
    rerun = {int(s): float(v) for s, n, v in (r.split(",") for r in rows) if n == METRIC}
    assert rerun[int(table[0]["best_step"])] == pytest.approx(table[0][METRIC], rel=1e-3, abs=1e-5)
    assert (tmp_path / "registry" / best["name"] / "1" / "model.yaml").is_file()

"""MLflow for a sweep: one parent run (the search space, the winner) with a child run per trial (its params and
every reported metric by step). Logged after the sweep from the collected results, so a restored sweep logs
each trial exactly once and the trials themselves need no MLflow client."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from voxray.training.tune.results import STEP, TrialOutcome, _finite
from voxray.training.tune.space import label

log = logging.getLogger(__name__)
RUN_ID_FILE = "mlflow_parent_run_id"


def default_uri(tune_dir: Path) -> str:
    """A SQLite MLflow store in the sweep dir (MLflow 3 refuses new file stores unless opted out by env)."""
    return f"sqlite:///{(tune_dir / 'mlflow.db').resolve()}"


def log_sweep(outcomes: list[TrialOutcome], rows: list[dict[str, Any]], *, tune_dir: Path, experiment: str,
              uri: str | None, space_yaml: dict[str, Any], metric: str) -> str:
    """Log the sweep; returns the parent run id. Reruns replace the previous parent run's children."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or default_uri(tune_dir))
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    id_file = tune_dir / RUN_ID_FILE
    if id_file.exists():
        _delete_tree(client, exp_id, id_file.read_text().strip())
    parent = client.create_run(exp_id, run_name=f"{experiment}-sweep", tags={"voxray.kind": "tune"})
    pid = parent.info.run_id
    id_file.write_text(pid)
    for path, domain in space_yaml.items():
        client.log_param(pid, f"space.{path}", label(domain)[:500])
    by_trial = {r["trial"]: r for r in rows}
    for o in outcomes:
        _log_trial(client, exp_id, pid, o, by_trial.get(o.trial_id, {}))
    if rows and _finite(rows[0].get(metric)):
        client.log_metric(pid, f"best/{metric}", rows[0][metric])
        client.set_tag(pid, "best_trial", rows[0]["trial"])
    client.set_terminated(pid)
    return pid


def _log_trial(client: Any, exp_id: str, parent_id: str, o: TrialOutcome, row: dict[str, Any]) -> None:
    tags = {"mlflow.parentRunId": parent_id, "voxray.trial": o.trial_id, "status": o.status,
            "stopped_early": str(row.get("stopped_early", False))}
    run = client.create_run(exp_id, run_name=o.trial_id, tags=tags)
    rid = run.info.run_id
    for path, value in o.params.items():
        client.log_param(rid, path.removeprefix("train."), str(label(value))[:500])
    for r in o.history:
        step = int(r.get(STEP, 0))
        for k, v in r.items():
            if (k.startswith("val/") or k.startswith("train/")) and _finite(v):
                client.log_metric(rid, k, float(v), step=step)
    if "rank" in row:
        client.log_metric(rid, "rank", row["rank"])
    client.set_terminated(rid, status="FAILED" if o.status == "ERROR" else "FINISHED")


def _delete_tree(client: Any, exp_id: str, parent_id: str) -> None:
    """Remove a previous parent run and its children (a rerun after restore logs the full sweep again)."""
    children = client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    for run in children:
        client.delete_run(run.info.run_id)
    try:
        client.delete_run(parent_id)
    except Exception as exc:  # noqa: BLE001  (already gone: nothing to replace)
        log.debug("previous parent run %s not deleted: %s", parent_id, exc)

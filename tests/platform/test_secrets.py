"""Secrets referenced as `${VAR}` in a spec never land in what voxray writes: resolved specs, results, MLflow params,
log records, CLI output. One interpolator serves the loader and cluster submission."""

from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import pytest

from voxray.platform.specs.env import NAMES_VAR, interpolate, redact, runtime_env_vars

ROOT = Path(__file__).resolve().parents[2]
VAR = "VOXRAY_TEST_SECRET"


@pytest.fixture
def secret(monkeypatch) -> str:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv(VAR, value)
    return value


def test_one_interpolator():
    """The `${NAME}` pattern is compiled once, in platform/specs/env.py (there were two, with different rules)."""
    pattern = re.compile(r"re\.compile\(r[\"']\\\$\\\{")
    hits = [p.relative_to(ROOT).as_posix() for d in ("platform", "preprocessing", "training", "serving")
            for p in (ROOT / d).rglob("*.py") if pattern.search(p.read_text())]
    assert hits == ["platform/specs/env.py"]


def test_redact_roundtrip(secret):
    data = interpolate({"a": ["x-${VOXRAY_TEST_SECRET}-y"], "n": 3}, "<test>")
    assert data == {"a": [f"x-{secret}-y"], "n": 3}
    assert redact(data) == {"a": ["x-${VOXRAY_TEST_SECRET}-y"], "n": 3}
    assert interpolate(redact(data), "<test>") == data  # the redacted spec reloads to the same job
    assert runtime_env_vars()[NAMES_VAR].split(",").count(VAR) == 1  # workers get the name, never the value
    assert secret not in str(runtime_env_vars())


def test_log_records_redacted(secret, caplog):
    interpolate("${VOXRAY_TEST_SECRET}", "<test>")
    with caplog.at_level(logging.INFO):
        logging.getLogger("voxray.test").info("connecting with token %s", secret)
    assert secret not in caplog.text and "token ${VOXRAY_TEST_SECRET}" in caplog.text


def test_mlflow_params_redacted(secret, tmp_path):
    from voxray.training.tracking import Tracker

    interpolate("${VOXRAY_TEST_SECRET}", "<test>")
    tracker = Tracker(tmp_path / "run", params={"tracking": {"uri": f"https://user:{secret}@mlflow.example"}})
    params = tracker.mlflow.get_run(tracker.run_id).data.params
    tracker.mlflow.end_run()
    assert params["tracking.uri"] == "https://user:${VOXRAY_TEST_SECRET}@mlflow.example"
    assert not [p for p in (tmp_path / "run").rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_preprocess_job_writes_no_secret(ray_session, secret, tmp_path, monkeypatch, capsys, caplog):
    """A real `voxray run` of a preprocess job whose spec references the secret: grep every file it wrote."""
    from voxray.platform.cli.app import main
    from voxray.preprocessing.synth import synth_dataset

    monkeypatch.delenv(NAMES_VAR, raising=False)
    synth_dataset("msd_brats", tmp_path / "data", cases=2, seed=0, shape=(24, 24, 16))
    job = tmp_path / "job.yaml"
    job.write_text(
        "kind: preprocess\nname: secret-test\n"
        "ray: {runtime_env: {env_vars: {DB_TOKEN: '${VOXRAY_TEST_SECRET}'}}}\n"
        "preprocess:\n  dataset: {layout: msd_brats, root: data}\n  store: work/store.zarr\n"
        "  spacing: [1.0, 1.0, 1.0]\n  chunk: [16, 16, 16]\n  fg_samples_per_class: 50\n")
    with caplog.at_level(logging.INFO):
        assert main(["run", str(job)]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != job]
    assert any(p.name == "job.resolved.yaml" for p in written) and len(written) > 10
    leaks = [str(p.relative_to(tmp_path)) for p in written if secret.encode() in p.read_bytes()]
    assert leaks == []
    resolved = (tmp_path / "work" / "store.zarr" / "job.resolved.yaml").read_text()
    assert "DB_TOKEN: ${VOXRAY_TEST_SECRET}" in resolved
    out = capsys.readouterr()
    assert secret not in out.out + out.err + caplog.text

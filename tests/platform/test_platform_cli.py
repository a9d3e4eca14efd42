"""The `voxray` CLI as a user runs it: exit codes, one line per spec problem, JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VOXRAY = [sys.executable, "-m", "voxray.platform.cli.app"]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXRAY, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_validate_every_example_job():
    jobs = sorted(str(p) for p in (ROOT / "examples" / "jobs").glob("*.yaml"))
    assert jobs, "examples/jobs/ has no job YAMLs"
    res = _run("validate", *jobs)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("ok ") == len(jobs)


def test_bad_job_prints_three_errors_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"kind": "train", "name": "b", "train": {
        "store": "s.zarr", "optimzer": {}, "batch_size": "two", "optimizer": {"lr": -1}}}))
    res = _run("validate", str(bad))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if str(bad) in ln]
    assert len(lines) == 3, res.stderr
    assert any("train.optimzer" in ln for ln in lines)
    assert any("train.batch_size" in ln for ln in lines)
    assert any("train.optimizer.lr" in ln for ln in lines)
    assert "Traceback" not in res.stderr


def test_run_with_invalid_spec_starts_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: preprocess\nname: x\npreprocess: {store: s.zarr}\n")
    res = _run("run", str(bad))
    assert res.returncode == 2
    assert "preprocess.dataset" in res.stderr
    assert "running" not in res.stdout


def test_schema_is_json_schema_with_all_kinds():
    res = _run("schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    text = json.dumps(schema)
    for kind in ("preprocess", "train", "tune", "serve", "pipeline"):
        assert f'"const": "{kind}"' in text or f'"{kind}"' in text
    assert "$defs" in schema


def test_schema_markdown_reference_lists_fields():
    res = _run("schema", "--markdown")
    assert res.returncode == 0
    assert "| `train.optimizer.lr` |" in res.stdout
    assert "## kind: pipeline" in res.stdout


def test_help_shows_examples():
    res = _run("run", "--help")
    assert res.returncode == 0
    assert "--set train.scaling.num_workers=2" in res.stdout

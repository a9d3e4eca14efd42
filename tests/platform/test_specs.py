"""Job specs: parsing, errors with YAML paths, overrides, env interpolation, path resolution, schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from voxray.platform.errors import SpecError
from voxray.platform.specs import apply_overrides, load_job, validate_job
from voxray.platform.specs.job import KINDS, job_json_schema
from voxray.platform.specs.loader import dump_job, write_resolved

TRAIN = {"kind": "train", "name": "t1", "train": {"store": "work/s.zarr", "patch": [32, 32, 32]}}


def _write(tmp_path: Path, data: dict, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


def test_minimal_train_job_fills_defaults_and_resolves_paths(tmp_path):
    job = load_job(_write(tmp_path, TRAIN))
    assert job.kind == "train"
    assert job.train.optimizer.name == "adamw" and job.train.optimizer.lr == 1e-4
    assert job.train.store == str((tmp_path / "work/s.zarr").resolve())
    assert job.ray.address is None


def test_uri_paths_are_kept_verbatim(tmp_path):
    data = {**TRAIN, "train": {**TRAIN["train"], "store": "s3://bucket/brats.zarr"}}
    assert load_job(_write(tmp_path, data)).train.store == "s3://bucket/brats.zarr"


def test_typo_wrong_type_and_negative_lr_give_three_errors_with_paths(tmp_path):
    data = {"kind": "train", "name": "t1", "train": {"store": "s.zarr", "optimzer": {"lr": 1}, "batch_size": "two",
                                                       "optimizer": {"lr": -0.1}}}
    with pytest.raises(SpecError) as exc:
        load_job(_write(tmp_path, data))
    problems = exc.value.problems
    assert len(problems) == 3
    text = "\n".join(problems)
    assert "train.optimzer: unknown key" in text
    assert "train.batch_size:" in text and "'two'" in text
    assert "train.optimizer.lr:" in text and "-0.1" in text
    assert exc.value.exit_code == 2


def test_unknown_kind_and_missing_kind(tmp_path):
    with pytest.raises(SpecError) as exc:
        validate_job({"kind": "bake", "name": "x"})
    assert "kind" in exc.value.problems[0] and "bake" in exc.value.problems[0]
    with pytest.raises(SpecError, match="kind: missing"):
        validate_job({"name": "x"})


def test_model_errors_name_the_model_field():
    data = {**TRAIN, "train": {**TRAIN["train"], "model": {"name": "swin_factorizer", "window": 1}}}
    with pytest.raises(SpecError) as exc:
        validate_job(data)
    assert exc.value.problems[0].startswith("train.model.window:")


def test_overrides_parse_yaml_values_and_do_not_mutate():
    out = apply_overrides(TRAIN, ["train.optimizer.lr=3e-4", "train.patch=[16, 16, 16]", "ray.address=auto"])
    assert out["train"]["optimizer"]["lr"] == 3e-4
    assert out["train"]["patch"] == [16, 16, 16]
    assert out["ray"]["address"] == "auto"
    assert "optimizer" not in TRAIN["train"]
    with pytest.raises(SpecError, match="a.b.c=value"):
        apply_overrides(TRAIN, ["train.steps"])


def test_override_into_a_scalar_is_an_error():
    with pytest.raises(SpecError, match="cannot set a field inside"):
        apply_overrides(TRAIN, ["name.x=1"])


def test_env_interpolation(tmp_path, monkeypatch):
    data = {"kind": "serve", "name": "s", "serve": {"model": "registry/m", "api_key_env": "${KEYVAR}"}}
    monkeypatch.setenv("KEYVAR", "MY_KEY")
    assert load_job(_write(tmp_path, data)).serve.api_key_env == "MY_KEY"
    monkeypatch.delenv("KEYVAR")
    with pytest.raises(SpecError, match=r"serve.api_key_env: environment variable \$\{KEYVAR\} is not set"):
        load_job(_write(tmp_path, data))


def test_invalid_yaml_reports_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("kind: train\nname: [unclosed\n")
    with pytest.raises(SpecError, match="line"):
        load_job(p)


def test_cross_field_rules():
    with pytest.raises(SpecError, match="fold 5 is out of range"):
        validate_job({**TRAIN, "train": {**TRAIN["train"], "validation": {"folds": 5, "fold": 5}}})
    with pytest.raises(SpecError, match="min_replicas 3 > max_replicas 1"):
        validate_job({"kind": "serve", "name": "s", "serve": {"model": "m", "autoscaling": {"min_replicas": 3}}})
    with pytest.raises(SpecError, match="tune needs a `train` section"):
        validate_job({"kind": "pipeline", "name": "p", "tune": {"space": {"train.steps": {"choice": [1, 2]}}}})
    with pytest.raises(SpecError, match="must be a dotted train path"):
        validate_job({"kind": "tune", "name": "p", "train": TRAIN["train"], "tune": {"space": {"lr": {"choice": [1]}}}})


def test_pipeline_serve_model_defaults_to_pipeline_export():
    job = validate_job({"kind": "pipeline", "name": "p", "train": TRAIN["train"], "serve": {"port": 8123}})
    assert job.serve.model.endswith("__pipeline__")


def test_bad_job_name():
    with pytest.raises(SpecError, match="name 'Bad Name!'"):
        validate_job({**TRAIN, "name": "Bad Name!"})


def test_schema_has_all_kinds_and_is_json():
    schema = job_json_schema()
    text = json.dumps(schema)
    for kind in KINDS:
        assert f'"{kind}"' in text
    assert schema["discriminator"]["propertyName"] == "kind" or "oneOf" in schema
    assert job_json_schema("train")["title"] == "TrainJob"


def test_resolved_spec_round_trips(tmp_path):
    job = load_job(_write(tmp_path, TRAIN))
    out = write_resolved(job, tmp_path / "run")
    assert out.name == "job.resolved.yaml"
    again = validate_job(yaml.safe_load(out.read_text()))
    assert again == job
    assert dump_job(job).startswith("# resolved by voxray")

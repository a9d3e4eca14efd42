"""YAML → validated job spec: `${ENV}` interpolation, `--set a.b=value` overrides, paths relative to the file,
and errors as one line per problem naming the dotted YAML path and the bad value."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from voxray.platform.errors import SpecError
from voxray.platform.specs.env import interpolate, redact
from voxray.platform.specs.job import JOB_ADAPTER, KINDS, JobSpec
from voxray.platform.specs.models import ModelSpec

_MODEL_TAGS = {name for cls in typing.get_args(typing.get_args(ModelSpec)[0])
               for name in typing.get_args(cls.model_fields["name"].annotation)}
RESOLVED_NAME = "job.resolved.yaml"


def apply_overrides(data: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply `a.b.c=value` overrides (value parsed as YAML) to a copy of the raw spec dict."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy; never mutate the caller's dict
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(source, [f"override {item!r} must look like a.b.c=value"])
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SpecError(source, [f"{key}: cannot set a field inside {part!r}, which is {child!r}"])
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def _parse_value(raw: str) -> Any:
    """YAML scalar/list/dict; YAML 1.1 reads `3e-4` as a string, so numbers are retried as floats."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in KINDS:  # the discriminator's tag, not a YAML key
        parts = parts[1:]
    out: list[str] = []
    for i, p in enumerate(parts):
        if i > 0 and parts[i - 1] == "model" and p in _MODEL_TAGS:
            continue  # model-name tag of the train.model union
        out.append(f"[{p}]" if p.isdigit() else p)
    return ".".join(out).replace(".[", "[") or "(top level)"


def format_errors(exc: ValidationError) -> list[str]:
    """One line per problem: `train.optimizer.lr: Input should be greater than 0 (got -0.1)`."""
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `voxray schema` lists the valid keys)"
        got = err.get("input")
        shown = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{_loc(err['loc'])}: {msg}{shown}")
    return lines


def validate_job(data: Any, *, source: str = "<spec>", base_dir: str | Path | None = None) -> JobSpec:
    """Validate a raw spec dict; raise SpecError listing every problem."""
    if not isinstance(data, dict):
        raise SpecError(source, [f"(top level): expected a mapping with `kind:` and `name:`, got {type(data).__name__}"])
    if "kind" not in data:
        raise SpecError(source, [f"kind: missing; one of {', '.join(KINDS)}"])
    try:
        return JOB_ADAPTER.validate_python(data, context={"base_dir": str(base_dir) if base_dir else None})
    except ValidationError as exc:
        raise SpecError(source, format_errors(exc)) from None


def load_job_dict(path: str | Path, overrides: list[str] | None = None) -> dict:
    """Read YAML, interpolate `${ENV}`, apply overrides; no validation."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), ["file not found"], hint="check the path; example jobs live in examples/jobs/")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(str(path), [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(data, dict):
        raise SpecError(str(path), ["(top level): expected a mapping with `kind:` and `name:`"])
    data = interpolate(data, str(path))
    return apply_overrides(data, overrides or [], str(path)) if overrides else data


def load_job(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Load and validate a job YAML; relative paths resolve against the file's folder."""
    data = load_job_dict(path, overrides)
    return validate_job(data, source=str(path), base_dir=Path(path).resolve().parent)


def dump_job(job: JobSpec) -> str:
    """The resolved spec as YAML (absolute paths, defaults filled in) — written next to every artefact, so every
    `${VAR}` value is written back as `${VAR}` (see specs/env.py)."""
    header = "# resolved by voxray: every default filled in, paths absolute, ${VAR}s kept as written\n"
    return header + yaml.safe_dump(redact(job.model_dump(mode="json")), sort_keys=False)


def write_resolved(job: JobSpec, directory: str | Path, name: str = RESOLVED_NAME) -> Path:
    """Write the resolved spec into a local directory (created if missing) and return its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    out.write_text(dump_job(job))
    return out

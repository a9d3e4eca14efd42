"""Shared spec building blocks: the strict base model, artefact paths that resolve relative to the spec file,
and the `ray` section."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class StrictModel(BaseModel):
    """Every spec section: unknown keys are errors, attribute docstrings become field descriptions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_default=True)


def is_uri(path: str) -> bool:
    """True for fsspec URIs (`s3://…`, `memory://…`, `file://…`), which are never resolved against the spec dir."""
    return bool(_URI.match(path))


def _resolve(value: str, info: ValidationInfo) -> str:
    if is_uri(value):
        if urlparse(value).password is not None:
            raise ValueError("a URI must not carry credentials (user:secret@): they would be written into every "
                             "resolved spec; put them in the environment (AWS_ACCESS_KEY_ID, AWS_PROFILE, …)")
        return value
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return str(path.resolve()) if base is not None else str(path)


ArtifactPath = Annotated[str, AfterValidator(_resolve)]
"""A local path (relative paths resolve against the spec file's folder) or an fsspec URI kept as written."""


class RaySpec(StrictModel):
    address: str | None = None
    """Ray cluster to use. null (default) starts an embedded local Ray; "auto" or "ray://host:10001" connects."""
    num_cpus: int | None = Field(default=None, ge=1)
    """CPUs for an embedded Ray (null = all cores). Ignored when connecting to a cluster."""
    num_gpus: int | None = Field(default=None, ge=0)
    """GPUs for an embedded Ray (null = autodetect). Ignored when connecting to a cluster."""
    object_store_memory_mb: int | None = Field(default=None, ge=78)
    """Object store size for an embedded Ray in MiB (null = Ray's default, 30% of RAM)."""
    dashboard: bool = True
    """Start the dashboard (and job server) with an embedded Ray."""
    runtime_env: dict | None = None
    """Ray runtime_env passed to ray.init when connecting (e.g. env_vars, pip); null = none."""

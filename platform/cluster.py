"""Run a job YAML on a remote Ray cluster through the Ray Jobs API (`voxray submit/status/stop`).

A submission ships three things: the job YAML exactly as written (runtime_env `working_dir`), this voxray as a thin
wheel (`py_modules`; the cluster image already has ray/torch/monai), and the values of the env vars named with
`--env-var` (`env_vars`; secrets travel by name, never inside the YAML). The entrypoint is
`python -m voxray.platform.cli.app run <job.yaml> --address auto`, so the job runs exactly as `voxray run` would.
Artefact paths are checked first: a path only the driver can see fails here, before anything is uploaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from voxray.platform.errors import JobFailed, SpecError, VoxrayError
from voxray.platform.paths import ARTIFACT_FIELDS, PATH_HINT, PathProblem, cluster_path_problems, is_loopback_address

log = logging.getLogger(__name__)

ENTRY_MODULE = "voxray.platform.cli.app"
META_PREFIX = "voxray."
TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClusterError(VoxrayError):
    """The cluster cannot be reached, refused us, or does not know the job."""


# ---------------------------------------------------------------- auth + client


def auth_token() -> str | None:
    """The Ray cluster token, looked up as Ray 2.60 does: RAY_AUTH_TOKEN, then RAY_AUTH_TOKEN_PATH, then
    ~/.ray/auth_token. None when RAY_AUTH_MODE=disabled or no token exists.

    Ray's JobSubmissionClient only attaches the token when RAY_AUTH_MODE=token is set in *this* process; voxray
    sends it whenever one is found (an auth-less cluster ignores the header), so `voxray submit` works either way.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path_env).expanduser() if path_env else Path.home() / ".ray" / "auth_token"
    if path.is_file():
        return path.read_text().strip() or None
    if path_env:
        raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path_env!r} does not point at a readable file",
                           hint="fix the path, or unset RAY_AUTH_TOKEN_PATH to use ~/.ray/auth_token")
    return None


def make_client(address: str) -> Any:
    """A JobSubmissionClient for the dashboard at `address` (http://head:8265), with the token if there is one."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    if not address.startswith(("http://", "https://")):
        raise ClusterError(f"--address {address!r} must be the dashboard URL, e.g. http://head:8265",
                           hint="the Jobs API listens on the dashboard port (8265 by default), not the GCS port")
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except AuthenticationError as exc:
        raise ClusterError(f"the cluster at {address} refused the token: {exc.message.splitlines()[0]}",
                           hint="put the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN "
                                "(`ray get-auth-token` on the head prints it)") from None
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"cannot reach the Ray Jobs API at {address}: {exc}",
                           hint="is the head up and its dashboard port reachable? (`ray status` on the head; "
                                "for KubeRay: kubectl port-forward svc/<cluster>-head-svc 8265)") from None


# ---------------------------------------------------------------- preparing a submission


@dataclass
class Submission:
    """Everything `JobSubmissionClient.submit_job` needs, plus what the CLI reports."""

    submission_id: str
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    artefacts: dict[str, str]
    warnings: list[str] = field(default_factory=list)


def env_values(names: list[str]) -> dict[str, str]:
    """Copy the named variables from this process's environment (secrets are passed by name only)."""
    out: dict[str, str] = {}
    for name in names:
        if not _ENV_NAME.match(name):
            raise VoxrayError(f"--env-var {name!r} must be a variable NAME, not a value",
                              hint="export VOXRAY_API_KEY=… then pass --env-var VOXRAY_API_KEY")
        if name not in os.environ:
            raise VoxrayError(f"--env-var {name}: the variable is not set in this shell",
                              hint=f"export {name}=… before submitting")
        out[name] = os.environ[name]
    return out


def _validate_for_cluster(job_path: Path, overrides: list[str]) -> tuple[Any, dict]:
    """Validate the spec as the cluster will see it; `${VAR}`s unset here may be set there, so they get a placeholder."""
    from voxray.platform.specs.env import interpolate
    from voxray.platform.specs.loader import apply_overrides, validate_job

    if not job_path.is_file():
        raise SpecError(str(job_path), ["file not found"], hint="check the path; example jobs live in examples/jobs/")
    try:
        raw = yaml.safe_load(job_path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(str(job_path), [f"not valid YAML ({exc})"]) from None
    if not isinstance(raw, dict):
        raise SpecError(str(job_path), ["(top level): expected a mapping with `kind:` and `name:`"])
    raw = interpolate(raw, str(job_path), unset=lambda name: f"voxray-env-{name}")
    raw = apply_overrides(raw, overrides, str(job_path)) if overrides else raw
    job = validate_job(raw, source=str(job_path), base_dir=job_path.resolve().parent)
    return job, raw


def check_paths(job: Any, raw: dict, address: str, source: str) -> list[str]:
    """Raise SpecError for driver-only artefact paths; return warnings for local paths on a remote cluster."""
    problems: list[PathProblem] = cluster_path_problems(raw, job.model_dump(mode="json"),
                                                       remote=not is_loopback_address(address))
    fatal = [p for p in problems if p.fatal]
    if fatal:
        raise SpecError(source, [str(p) for p in fatal], hint=PATH_HINT.format(field=fatal[0].field))
    return [str(p) for p in problems]


def _artefacts(job: Any) -> dict[str, str]:
    dumped = job.model_dump(mode="json")
    out: dict[str, str] = {}
    for dotted in ARTIFACT_FIELDS:
        node: Any = dumped
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and not node.endswith("__pipeline__"):
            out[dotted] = node
    return out


def entrypoint_for(job_file: str, overrides: list[str]) -> str:
    """The shell command the cluster runs: voxray's own `run`, pointed at the cluster it runs in."""
    args = ["python", "-m", ENTRY_MODULE, "run", job_file, "--address", "auto"]
    for item in overrides:
        args += ["--set", item]
    return shlex.join(args)


def prepare_submission(job_path: Path, *, address: str, staging: Path, overrides: list[str] | None = None,
                       env_var_names: list[str] | None = None, wheel: Path | None = None) -> Submission:
    """Validate and path-check the job, stage its YAML in `staging` (the working_dir), build the runtime_env."""
    overrides = list(overrides or [])
    job_path = Path(job_path)
    job, raw = _validate_for_cluster(job_path, overrides)
    warnings = check_paths(job, raw, address, str(job_path))
    workdir = Path(staging) / "working_dir"
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(job_path, workdir / job_path.name)  # the file as written: ${VAR}s resolve on the cluster
    runtime_env: dict[str, Any] = {"working_dir": str(workdir)}
    if wheel is not None:
        runtime_env["py_modules"] = [str(wheel)]
    env = env_values(list(env_var_names or []))
    if env:
        runtime_env["env_vars"] = env
    artefacts = _artefacts(job)
    metadata = {f"{META_PREFIX}name": job.name, f"{META_PREFIX}kind": job.kind,
                f"{META_PREFIX}spec": job_path.name, f"{META_PREFIX}artefacts": json.dumps(artefacts)}
    return Submission(submission_id=f"voxray-{job.name}-{uuid.uuid4().hex[:8]}",
                      entrypoint=entrypoint_for(job_path.name, overrides), runtime_env=runtime_env,
                      metadata=metadata, artefacts=artefacts, warnings=warnings)


# ---------------------------------------------------------------- submit / follow / status / stop


def submit(job_path: Path, *, address: str, overrides: list[str] | None = None,
           env_var_names: list[str] | None = None, ship_wheel: bool = True) -> Submission:
    """Package, upload and start the job; returns once the cluster accepted it (see `follow`)."""
    from voxray.platform.packaging import build_wheel

    job, raw = _validate_for_cluster(Path(job_path), list(overrides or []))
    check_paths(job, raw, address, str(job_path))  # fail before building or uploading anything
    env_values(list(env_var_names or []))
    client = make_client(address)
    with tempfile.TemporaryDirectory(prefix="voxray-submit-") as tmp:
        wheel = build_wheel(Path(tmp) / "wheel") if ship_wheel else None
        sub = prepare_submission(job_path, address=address, staging=Path(tmp), overrides=overrides,
                                 env_var_names=env_var_names, wheel=wheel)
        try:
            client.submit_job(entrypoint=sub.entrypoint, submission_id=sub.submission_id,
                              runtime_env=sub.runtime_env, metadata=sub.metadata)
        except RuntimeError as exc:
            raise ClusterError(f"the cluster rejected the job: {exc}") from None
    log.info("submitted %s to %s", sub.submission_id, address)
    return sub


def follow(address: str, job_id: str, write: Callable[[str], None]) -> str:
    """Stream the job's logs through `write` until it ends; return its final state (SUCCEEDED/FAILED/STOPPED)."""
    client = make_client(address)

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(_tail())
    except RuntimeError as exc:  # websocket dropped (head restarted, proxy timeout): fall back to the state
        log.warning("log stream for %s ended early: %s", job_id, exc)
    return str(client.get_job_status(job_id).value)


def _info(client: Any, job_id: str) -> Any:
    try:
        return client.get_job_info(job_id)
    except RuntimeError as exc:
        raise ClusterError(f"job {job_id!r} is unknown to this cluster ({exc})",
                           hint="`voxray status --address …` lists the cluster's jobs") from None


def job_status(address: str, job_id: str, *, tail: int = 20) -> dict[str, Any]:
    """State, message, timings, artefact paths (from the submitted spec) and the last `tail` log lines."""
    client = make_client(address)
    info = _info(client, job_id)
    meta = info.metadata or {}
    logs = client.get_job_logs(job_id) if tail > 0 else ""
    return {"job_id": job_id, "ray_job_id": info.job_id, "state": str(info.status.value), "message": info.message,
            "name": meta.get(f"{META_PREFIX}name"), "kind": meta.get(f"{META_PREFIX}kind"),
            "entrypoint": info.entrypoint, "start_time": info.start_time, "end_time": info.end_time,
            "driver_node": getattr(info, "driver_node_id", None),
            "artefacts": json.loads(meta.get(f"{META_PREFIX}artefacts", "{}")),
            "logs_tail": logs.splitlines()[-tail:] if tail > 0 else []}


def list_jobs(address: str) -> list[dict[str, Any]]:
    """One row per job the cluster knows (newest first), voxray jobs with their spec name."""
    client = make_client(address)
    rows = []
    for info in sorted(client.list_jobs(), key=lambda j: j.start_time or 0, reverse=True):
        meta = info.metadata or {}
        rows.append({"job_id": info.submission_id or info.job_id, "state": str(info.status.value),
                     "name": meta.get(f"{META_PREFIX}name", ""), "kind": meta.get(f"{META_PREFIX}kind", ""),
                     "message": (info.message or "")[:80]})
    return rows


def stop(address: str, job_id: str) -> str:
    """Ask the cluster to stop a job; returns its state afterwards."""
    client = make_client(address)
    _info(client, job_id)
    client.stop_job(job_id)
    return str(client.get_job_status(job_id).value)


def raise_if_failed(job_id: str, state: str, message: str | None = None) -> None:
    """A job that ended in any state but SUCCEEDED is a JobFailed (exit 5)."""
    if state != "SUCCEEDED":
        raise JobFailed(f"job {job_id} ended {state}" + (f": {message}" if message else ""),
                        hint=f"`voxray status {job_id} --address …` shows the log tail")

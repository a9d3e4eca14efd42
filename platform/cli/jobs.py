"""Job verbs: validate, schema, run, version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import AddressOpt, JobArg, SetOpt
from voxray.platform.errors import JobFailed, SpecError

VALIDATE_EXAMPLES = """
Examples:

  voxray validate examples/jobs/*.yaml

  voxray validate job.yaml --set train.optimizer.lr=3e-4
"""

RUN_EXAMPLES = """
Examples:

  voxray run examples/jobs/preprocess_msd_brats.yaml

  voxray run job.yaml --set train.scaling.num_workers=2 --set train.steps=200

  voxray run job.yaml --address auto
"""


def validate(
    jobs: Annotated[list[Path], typer.Argument(help="Job spec YAML files.")],
    set_: SetOpt = None,
) -> None:
    """Validate job specs: one line per problem with its YAML path; exit 2 on any error."""
    from voxray.platform.specs import load_job

    problems: list[str] = []
    for path in jobs:
        try:
            job = load_job(path, set_)
            _output.result(f"[green]ok[/]  {path}  (kind: {job.kind}, name: {job.name})")
        except SpecError as exc:
            problems.extend(f"{exc.source}: {p}" for p in exc.problems)
    if problems:
        raise SpecError("", problems) from None


def schema(
    kind: Annotated[Optional[str], typer.Option("--kind", "-k", help="Only this kind's schema.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="A Markdown field reference instead of JSON Schema.")] = False,
) -> None:
    """Print the job spec's JSON Schema (for YAML completion in editors) or a Markdown reference."""
    from voxray.platform.specs.job import job_json_schema
    from voxray.platform.specs.reference import markdown_reference

    if markdown:
        _output.console.file.write(markdown_reference())
        return
    _output.console.file.write(json.dumps(job_json_schema(kind), indent=2) + "\n")


def run(job_path: JobArg, set_: SetOpt = None, address: AddressOpt = None) -> None:
    """Run a job (any kind) on an embedded local Ray, or on a cluster with --address."""
    from voxray.platform.specs import load_job
    from voxray.platform.specs.env import redact
    from voxray.platform.stages import run_job

    job = load_job(job_path, set_)
    _output.result(f"running [bold]{job.kind}[/] job [bold]{job.name}[/] from {job_path}")
    res = run_job(job, address=address)
    for title, rows in redact(res.tables):
        _output.table(rows, title=title)
    if res.summary:
        _output.table([{"item": k, "value": v} for k, v in redact(res.summary).items()], title=f"{job.kind} summary")
    if not res.ok:
        raise JobFailed(res.message or f"{job.kind} job {job.name!r} did not succeed")


def version() -> None:
    """Print voxray's version and the versions of its key dependencies."""
    from importlib.metadata import PackageNotFoundError, version as v

    for pkg in ("voxray", "ray", "torch", "monai", "zarr", "pydantic"):
        try:
            _output.result(f"{pkg} {v(pkg)}")
        except PackageNotFoundError:
            _output.result(f"{pkg} (not installed)")


def register(app: typer.Typer) -> None:
    app.command(epilog=VALIDATE_EXAMPLES)(validate)
    app.command()(schema)
    app.command(epilog=RUN_EXAMPLES)(run)
    app.command()(version)

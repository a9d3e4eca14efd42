"""Cluster verbs over the Ray Jobs API: submit, status, stop."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import JobArg, JsonOpt, SetOpt

DashboardOpt = Annotated[str, typer.Option("--address", "-a", envvar="RAY_API_SERVER_ADDRESS",
                                           help="Ray dashboard URL of the cluster, e.g. http://head:8265 "
                                                "(env: RAY_API_SERVER_ADDRESS).")]

SUBMIT_EXAMPLES = """
Examples:

  voxray submit examples/jobs/pipeline_demo.yaml --address http://head:8265 --follow

  voxray submit job.yaml -a http://head:8265 --set train.steps=200 --env-var VOXRAY_API_KEY

  voxray submit job.yaml -a http://head:8265 --no-wheel     # use the voxray in the cluster image

Auth: a token-auth cluster's token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
"""

STATUS_EXAMPLES = """
Examples:

  voxray status --address http://head:8265                      # all jobs

  voxray status voxray-brats-1a2b3c4d --address http://head:8265 --tail 50
"""


def submit(
    job_path: JobArg,
    address: DashboardOpt,
    set_: SetOpt = None,
    env_var: Annotated[Optional[list[str]], typer.Option(
        "--env-var", "-e", help="Copy this variable's value from your shell into the job (repeatable). "
                                "Secrets go only this way, never in the YAML.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream the job's logs until it ends.")] = False,
    wheel: Annotated[bool, typer.Option("--wheel/--no-wheel", help="Ship this voxray as a wheel "
                                        "(default), or use the one installed in the cluster image.")] = True,
) -> None:
    """Submit a job YAML to a Ray cluster (Ray Jobs API); prints the job id."""
    from voxray.platform import cluster

    sub = cluster.submit(job_path, address=address, overrides=set_, env_var_names=env_var, ship_wheel=wheel)
    for warning in sub.warnings:
        _output.hint(f"warning: {warning}")
    _output.result(f"submitted [bold]{sub.submission_id}[/]")
    _output.table([{"artefact": k, "path": v} for k, v in sub.artefacts.items()], title="artefacts")
    if not follow:
        _output.result(f"follow it: voxray status {sub.submission_id} --address {address}")
        return
    state = cluster.follow(address, sub.submission_id, _output.console.file.write)
    _output.result(f"job {sub.submission_id}: [bold]{state}[/]")
    cluster.raise_if_failed(sub.submission_id, state)


def status(
    address: DashboardOpt,
    job_id: Annotated[Optional[str], typer.Argument(help="Job id from `voxray submit`; omit to list all jobs.")] = None,
    tail: Annotated[int, typer.Option("--tail", "-n", help="Log lines to show.", min=0)] = 20,
    json_: JsonOpt = False,
) -> None:
    """Show one job (state, artefact paths, log tail) or list the cluster's jobs."""
    from voxray.platform import cluster

    if job_id is None:
        rows = cluster.list_jobs(address)
        _output.as_json(rows) if json_ else _output.table(rows, title=f"jobs on {address}")
        return
    info = cluster.job_status(address, job_id, tail=tail)
    if json_:
        _output.as_json(info)
        return
    _output.result(f"[bold]{job_id}[/]: {info['state']}" + (f" ({info['message']})" if info["message"] else ""))
    _output.table([{"artefact": k, "path": v} for k, v in info["artefacts"].items()], title="artefacts")
    if info["logs_tail"]:
        _output.console.file.write("\n".join(info["logs_tail"]) + "\n")


def stop(
    job_id: Annotated[str, typer.Argument(help="Job id from `voxray submit`.")],
    address: DashboardOpt,
) -> None:
    """Stop a running job."""
    from voxray.platform import cluster

    state = cluster.stop(address, job_id)
    _output.result(f"{job_id}: {state}")


def register(app: typer.Typer) -> None:
    app.command(epilog=SUBMIT_EXAMPLES)(submit)
    app.command(epilog=STATUS_EXAMPLES)(status)
    app.command()(stop)

"""`voxray demo`: the one-command tour, raw NIfTI → served model → a Dice from an HTTP round trip."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from voxray.platform.cli import _output
from voxray.platform.errors import SpecError

DEFAULT_JOB = Path("examples/jobs/pipeline_demo.yaml")


def demo(
    job: Annotated[Path, typer.Option("--job", help="Pipeline job to run (needs preprocess, train/tune, serve).")] = DEFAULT_JOB,
    keep_serving: Annotated[bool, typer.Option(
        "--keep-serving", help="Keep Ray Serve and the browser viewer up after the demo, until Ctrl-C.")] = False,
) -> None:
    """Synthesise MSD-BraTS, preprocess, sweep, export, serve, then predict a held-back case over HTTP."""
    from voxray.platform.demo import run_demo

    if not job.is_file():
        raise SpecError(str(job), ["file not found"], hint="run `voxray demo` from the repository root, or pass --job")
    _output.result(f"voxray demo: {job} (embedded Ray, synthetic data, CPU)")
    if not keep_serving:
        _report(run_demo(job), False, None)
        return
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs import load_job

    spec = load_job(job)
    key_env = spec.serve.api_key_env if spec.serve is not None else None
    generated = bool(key_env) and not os.environ.get(key_env or "")
    with ray_runtime(spec.ray):  # held here, so Serve outlives run_demo
        res = run_demo(job, keep_serving=True)
        _report(res, True, key_env)
        if generated:  # a throwaway key made by the demo: the viewer is useless without it
            _output.result(f"API key for the viewer (generated for this run, ${key_env}): {os.environ[key_env]}")
        serve_until_interrupted(res.artefacts.get("viewer", ""))


def _report(res, kept: bool, key_env: str | None) -> None:
    for title, rows in res.tables:
        _output.table(rows, title=title)
    _output.table([{"artefact": k, "path": v} for k, v in res.artefacts.items()], title="artefacts")
    _output.table(res.quality, title=f"Dice on {res.quality[0]['cases']} held-back cases (masks returned over HTTP) "
                                     "vs the per-voxel intensity baseline (fitted on the training voxels)")
    _output.result("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))
    viewer = res.artefacts.get("viewer")
    if viewer and not kept:
        _output.result(f"viewer: {viewer} (up while the demo runs; `voxray demo --keep-serving` keeps it up)")
    elif viewer:
        _output.result(f"viewer: {viewer}" + (f" (enter the API key from ${key_env})" if key_env else ""))


def serve_until_interrupted(url: str, poll_s: float = 3600.0) -> None:
    """Block until Ctrl-C, then shut Serve down."""
    from ray import serve

    _output.result(f"serving {url} — press Ctrl-C to stop")
    try:
        while True:
            time.sleep(poll_s)
    except KeyboardInterrupt:
        _output.result("stopping Serve")
    finally:
        serve.shutdown()


def register(app: typer.Typer) -> None:
    app.command(epilog="Example:\n\n  make demo   (= .venv/bin/voxray demo)\n"
                       "  .venv/bin/voxray demo --keep-serving   (then open the printed viewer URL)")(demo)

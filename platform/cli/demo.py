"""`voxray demo`: the one-command tour, raw NIfTI → served model → a Dice from an HTTP round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from voxray.platform.cli import _output
from voxray.platform.errors import SpecError

DEFAULT_JOB = Path("examples/jobs/pipeline_demo.yaml")


def demo(
    job: Annotated[Path, typer.Option("--job", help="Pipeline job to run (needs preprocess, train/tune, serve).")] = DEFAULT_JOB,
) -> None:
    """Synthesise MSD-BraTS, preprocess, sweep, export, serve, then predict a held-back case over HTTP."""
    from voxray.platform.demo import run_demo

    if not job.is_file():
        raise SpecError(str(job), ["file not found"], hint="run `voxray demo` from the repository root, or pass --job")
    _output.result(f"voxray demo: {job} (embedded Ray, synthetic data, CPU)")
    res = run_demo(job)
    for title, rows in res.tables:
        _output.table(rows, title=title)
    _output.table([{"artefact": k, "path": v} for k, v in res.artefacts.items()], title="artefacts")
    _output.table(res.quality, title=f"Dice on {res.quality[0]['cases']} held-back cases (masks returned over HTTP) "
                                     "vs the per-voxel intensity baseline (fitted on the training voxels)")
    _output.result("timings: " + ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()))


def register(app: typer.Typer) -> None:
    app.command(epilog="Example:\n\n  make demo   (= .venv/bin/voxray demo)")(demo)

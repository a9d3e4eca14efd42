"""`voxray plan`: a dataset (or store) → a job YAML whose spacing, resampling, normalisation, network, patch, batch
and steps are derived from the data and a measured memory/time budget (docs/plan.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from voxray.platform.cli import _output
from voxray.platform.cli._options import JsonOpt
from voxray.platform.errors import VoxrayError
from voxray.platform.specs.loader import format_errors

PLAN_EXAMPLES = """
Examples:

  voxray plan data/msd_brats --layout msd_brats --out jobs/brats.yaml

  voxray plan data/ibsr --layout ibsr18 --model unet --memory-gb 8 --hours 2 --out jobs/ibsr.yaml

  voxray plan work/brats.zarr --out jobs/brats-train.yaml        # from a store's fingerprint.json

  voxray plan data/ct --layout nifti_pairs --images CT='*/ct.nii.gz' --label '*/seg.nii.gz' --modality CT=CT
"""


def _pairs(items: list[str] | None, option: str) -> dict[str, str]:
    bad = [i for i in items or [] if "=" not in i]
    if bad:
        raise VoxrayError(f"{option} {bad[0]!r} must be NAME=VALUE")
    return dict(i.split("=", 1) for i in items or [])


def plan(
    path: Annotated[Path, typer.Argument(help="Dataset root (with --layout) or a store made by `voxray preprocess`.")],
    layout: Annotated[Optional[str], typer.Option("--layout", "-l", help="Dataset layout; omit for a store.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the job YAML.")] = Path("plan.yaml"),
    model: Annotated[str, typer.Option("--model", help="auto (swin_factorizer where its rules fit, else unet), "
                                                       "swin_factorizer or unet.")] = "auto",
    memory_gb: Annotated[float, typer.Option("--memory-gb", min=0.01, help="Accelerator memory per worker, GiB.")] = 16.0,
    hours: Annotated[float, typer.Option("--hours", min=0.0, help="Compute budget for training, hours.")] = 24.0,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Fix the step count (ignores --hours).")] = None,
    step_seconds: Annotated[Optional[float], typer.Option("--step-seconds", min=0.0, help="Seconds per step on the "
                                                          "target machine (default: measured here).")] = None,
    device: Annotated[str, typer.Option("--device", help="Where to measure: auto, cpu or cuda.")] = "auto",
    anisotropy: Annotated[float, typer.Option("--anisotropy-threshold", min=1.01, help="Spacing ratio above which "
                                              "a grid is anisotropic (nnU-Net: 3).")] = 3.0,
    modality: Annotated[Optional[list[str]], typer.Option("--modality", help="CHANNEL=CT|MR (repeatable); default "
                                                          "from the channel name.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Job name (default: <layout>-plan).")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Store the planned preprocess writes.")] = None,
    images: Annotated[Optional[list[str]], typer.Option("--images", help="nifti_pairs: MODALITY=GLOB.")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="nifti_pairs: label glob.")] = None,
    intensity_cases: Annotated[Optional[int], typer.Option("--intensity-cases", min=0, help="Cases decoded for "
                                                           "intensity statistics (default: 10 for CT, 0 for MR).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Training workers (DDP ranks).")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Derive a training recipe from the data (nnU-Net-style) and write it as a job YAML, every field explained."""
    from voxray.platform.specs.plan import PlanSpec
    from voxray.training.plan.runner import write_plan

    modalities = {k: v.upper() for k, v in _pairs(modality, "--modality").items()}
    if any(v not in ("CT", "MR") for v in modalities.values()):
        raise VoxrayError(f"--modality values must be CT or MR, got {sorted(set(modalities.values()))}")
    if layout is None and (images or label):
        raise VoxrayError("--images/--label describe a dataset: give --layout nifti_pairs with them")
    dataset = {"layout": layout, "root": str(path.resolve()),
               **{k: v for k, v in {"images": _pairs(images, "--images") or None, "label": label}.items() if v}}
    try:
        spec = PlanSpec.model_validate({
            "dataset": dataset if layout else None, "store": None if layout else str(path), "out": str(out),
            "model": model, "memory_gb": memory_gb, "hours": hours, "steps": steps, "step_seconds": step_seconds,
            "device": device, "anisotropy_threshold": anisotropy, "modalities": modalities,
            "intensity_cases": intensity_cases, "job_name": name, "planned_store": store, "workers": workers})
        result = write_plan(spec)
    except ValidationError as exc:
        raise VoxrayError("; ".join(format_errors(exc)), hint="voxray plan --help") from None
    except ValueError as exc:
        raise VoxrayError(str(exc), hint="voxray plan --help") from None
    if as_json:
        _output.as_json({"out": str(out), "kind": result.kind, **result.details})
        return
    d = result.details
    _output.table([{"decision": k, "value": v} for k, v in [
        ("spacing (z, y, x) mm", " × ".join(f"{s:.4g}" for s in d["target_spacing_zyx"])),
        ("resampling", d["resampling"]["scheme"]), ("normalize", d["normalize"]["normalize"]),
        ("model", d["family"]), ("patch (z, y, x)", " × ".join(map(str, d["patch"]))),
        ("batch size", d["batch_size"]), ("memory", f"{d['estimated_bytes'] / 2**30:.2f} of {d['memory_gb']:g} GiB"),
        ("step time", f"{d['step_seconds']:.3g} s ({d['device']})"), ("steps", d["steps"])]],
        title=f"plan for {d['cases']} cases ({d['source']})")
    _output.result(f"[green]wrote[/] {result.kind} job to {out}")
    _output.hint(f"voxray validate {out} && voxray run {out}")


def register(app: typer.Typer) -> None:
    app.command(epilog=PLAN_EXAMPLES)(plan)

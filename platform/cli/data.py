"""Dataset verbs: `voxray synth` writes a synthetic dataset in a real layout, `voxray inspect` lists what one holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import JsonOpt
from voxray.platform.errors import VoxrayError

LayoutOpt = Annotated[str, typer.Option("--layout", "-l", help="Dataset layout: msd_brats, isles2022, brats2023, "
                                        "ibsr18, lgg_tif, uwmadison_gi, nifti_pairs.")]

SYNTH_EXAMPLES = """
Examples:

  voxray synth --layout msd_brats --out data/msd_brats --cases 4 --test-cases 1

  voxray synth --layout brats2023 --out data/brats23 --cases 2 --shape 240 240 155

  voxray synth --layout uwmadison_gi --out data/uw --cases 2 --shape 64 64 16

  voxray synth --layout ibsr18 --out data/ibsr5mm --cases 3 --shape 48 10 48 --spacing 0.9375 5 0.9375
"""

INSPECT_EXAMPLES = """
Examples:

  voxray inspect data/msd_brats --layout msd_brats

  voxray inspect data/isles --layout isles2022 --reference-modality flair --json

  voxray inspect data/pairs --layout nifti_pairs --images T1='*/t1.nii.gz' --images T2='*/t2.nii.gz' --label '*/label.nii.gz'
"""


def synth(
    layout: LayoutOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the dataset into.")],
    cases: Annotated[int, typer.Option("--cases", "-n", min=1, help="Labelled cases.")] = 2,
    test_cases: Annotated[int, typer.Option("--test-cases", min=0, help="Unlabelled test cases (layouts with a test part).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    shape: Annotated[Optional[tuple[int, int, int]], typer.Option("--shape", help="Volume size X Y Z (2D layouts: rows columns slices); default small.")] = None,
    difficulty: Annotated[int, typer.Option("--difficulty", min=0, max=3, help="0 easy (separable by intensity) … 3 hard; default 2 defeats a per-voxel intensity classifier (docs/datasets.md).")] = 2,
    spacing: Annotated[Optional[tuple[float, float, float]], typer.Option("--spacing", help="Voxel size X Y Z in mm instead of the layout's own (ibsr18), e.g. 0.9375 5 0.9375 for thick slices.")] = None,
) -> None:
    """Write a small synthetic dataset in a real layout (file names, dtypes, orientation, spacing as downloaded)."""
    from voxray.preprocessing.synth import synth_dataset

    if shape is not None and any(s is None for s in shape):
        shape = None
    if spacing is not None and any(s is None for s in spacing):
        spacing = None
    try:
        root = synth_dataset(layout, out, cases=cases, seed=seed, shape=shape, test_cases=test_cases,
                             difficulty=difficulty, spacing=spacing)
    except ValueError as exc:
        raise VoxrayError(str(exc), hint="voxray synth --help") from None
    _output.result(f"[green]wrote[/] {cases} labelled + {test_cases} test {layout} cases (difficulty {difficulty}) to {root}")
    _output.hint(f"voxray inspect {root} --layout {layout}")


def inspect(
    root: Annotated[Path, typer.Argument(help="Dataset root folder.")],
    layout: LayoutOpt,
    split: Annotated[str, typer.Option("--split", help="train (labelled), test (unlabelled) or all.")] = "train",
    reference_modality: Annotated[Optional[str], typer.Option("--reference-modality", help="Grid to resample onto (isles2022, nifti_pairs).")] = None,
    images: Annotated[Optional[list[str]], typer.Option("--images", help="nifti_pairs: MODALITY=GLOB (repeatable).")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="nifti_pairs: label glob.")] = None,
    case_id_regex: Annotated[Optional[str], typer.Option("--case-id-regex", help="nifti_pairs: regex with one group for the case id.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Decode only the first N cases.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List cases, modalities, shapes, spacings, label values and per-case problems (every case is decoded)."""
    from voxray.preprocessing.datasets import get_adapter
    from voxray.preprocessing.datasets.summary import inspect_dataset

    try:
        adapter = get_adapter(layout, split=split, reference_modality=reference_modality, images=_pairs(images),
                              label=label, case_id_regex=case_id_regex)
    except ValueError as exc:
        raise VoxrayError(str(exc), hint="voxray inspect --help") from None
    report = inspect_dataset(adapter, root, limit)
    if as_json:
        _output.as_json(report)
        return
    _print_report(report)


def _pairs(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    bad = [i for i in items if "=" not in i]
    if bad:
        raise VoxrayError(f"--images {bad[0]!r} must be MODALITY=GLOB, e.g. T1='*/t1.nii.gz'")
    return dict(i.split("=", 1) for i in items)


def _print_report(report: dict) -> None:
    labels = ", ".join(f"{k} {v}" for k, v in report["labels"].items())
    _output.result(f"[bold]{report['layout']}[/] at {report['root']} (split {report['split']}): {report['cases']} cases, "
                   f"channels {', '.join(report['channels'])}; labels ({report['label_encoding']}): {labels}")
    rows = [{"case": r["case_id"], "status": r["status"], "modalities": ", ".join(r["modalities"]),
             "shape": "x".join(map(str, r["shape"] or [])), "spacing": " ".join(f"{s:g}" for s in r["spacing"] or []),
             "labels": " ".join(map(str, r["label_values"] or [])), "problems": "; ".join(r["problems"])}
            for r in report["rows"]]
    _output.table(rows, title=f"{report['inspected']} of {report['cases']} cases")
    if report["with_problems"]:
        _output.hint(f"{report['with_problems']} case(s) have problems; preprocessing skips them and records why")
    _print_labels(report)


def _print_labels(report: dict) -> None:
    """Say plainly when a dataset cannot train a model: no labels at all, or some cases without one."""
    n, unlabelled = report["cases"], report["unlabelled"]
    if unlabelled == n:
        _output.result(f"[bold yellow]no labels:[/] none of the {n} cases has a label file (split {report['split']}); "
                     f"they can be preprocessed and predicted on, but not trained or validated on")
    elif unlabelled:
        _output.result(f"[yellow]unlabelled:[/] {unlabelled} of {n} cases have no label; training and validation use only the "
                     f"{report['labelled']} labelled ones")


def register(app: typer.Typer) -> None:
    app.command(epilog=SYNTH_EXAMPLES)(synth)
    app.command(epilog=INSPECT_EXAMPLES)(inspect)

"""`voxray export`: derived registry artefacts — an ensemble entry over member models, ONNX graphs beside cards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.cli._options import JsonOpt
from voxray.platform.errors import VoxrayError

EXPORT_EXAMPLES = """
Examples:

  voxray export registry/brats-fold0 registry/brats-fold1 registry/brats-fold2 --ensemble brats-cv
      (a registry entry registry/brats-cv whose card lists the three; predict with it like any model)

  voxray export registry/brats --onnx          (model.onnx beside the card; predict --backend onnxruntime)

  voxray export registry/brats --onnx --default-backend      (and make onnxruntime the card's default backend,
      so `voxray serve registry/brats` runs it)
"""


def export(
    models: Annotated[list[str], typer.Argument(help="Registry entries: <registry>/<name> or <registry>/<name>/<version>.")],
    ensemble: Annotated[Optional[str], typer.Option(
        "--ensemble", help="Write a new registry entry of this name: an ensemble of MODELS (their probabilities "
                           "are averaged).", show_default=False)] = None,
    registry: Annotated[Optional[str], typer.Option(
        "--registry", help="Registry root for --ensemble (default: the members' registry, which must hold them).",
        show_default=False)] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="Write model.onnx beside each model's card (an ensemble: "
                                                      "each member's).")] = False,
    default_backend: Annotated[bool, typer.Option(
        "--default-backend", help="With --onnx: make onnxruntime the card's default inference backend.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Export registry artefacts: an ensemble entry over trained models, and/or ONNX graphs of models."""
    from voxray.training.ensemble import export_ensemble
    from voxray.training.onnx_export import export_onnx

    if ensemble is None and not onnx:
        raise VoxrayError("nothing to do: give --ensemble NAME (with 2 or more models) and/or --onnx")
    if default_backend and not onnx:
        raise VoxrayError("--default-backend needs --onnx (the backend runs the exported graph)")
    rows = []
    targets = list(models)
    if ensemble is not None:
        entry = export_ensemble(models, ensemble, registry)
        rows.append({"artefact": "ensemble", "path": str(entry), "detail": f"{len(models)} members"})
        targets = [str(entry)]
    if onnx:
        for target in targets:
            block = export_onnx(target, default_backend=default_backend)
            for b in block.get("members", [block]):
                rows.append({"artefact": "onnx", "path": target, "detail": f"{b['exporter']} exporter, window "
                             f"{b['window']}, max |Δ logits| {b['max_abs_diff']:.2g}"})
    if json_:
        _output.as_json(rows)
    else:
        _output.table(rows, title="export")


def register(app: typer.Typer) -> None:
    app.command(epilog=EXPORT_EXAMPLES)(export)

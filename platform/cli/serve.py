"""Serving verbs: `voxray predict` (in-process from the registry, or over HTTP with --url) and `voxray serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.errors import VoxrayError

PREDICT_EXAMPLES = """
Examples:

  voxray predict --model registry/brats --input flair=flair.nii.gz --input t1=t1.nii.gz
      --input t1ce=t1ce.nii.gz --input t2=t2.nii.gz --out mask.nii.gz

  voxray predict --model registry/brats/3 --input case_0001.nii.gz --out mask.nii.gz    (one 4D image)

  voxray predict --url http://127.0.0.1:8000 --input BraTS_001_flair.nii.gz ... --out mask.nii.gz --json
"""

SERVE_EXAMPLES = """
Examples:

  export VOXRAY_API_KEY=$(openssl rand -hex 16)

  voxray serve registry/brats --port 8000

  voxray run examples/jobs/serve_brats.yaml       (the same, with every option in a job spec)
"""

InputOpt = Annotated[list[str], typer.Option("--input", "-i", help="<channel>=<path>, or a path whose file name "
                                             "names the channel, or one 4D NIfTI (repeatable).")]


def predict(
    inputs: InputOpt,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the mask NIfTI here.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry entry <registry>/<name> or <registry>/<name>/<version> "
                                                 "(predicts in this process).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="A voxray server's base URL (predicts over HTTP).")] = None,
    api_key_env: Annotated[str, typer.Option(help="Env var with the server's API key (--url).")] = "VOXRAY_API_KEY",
    device: Annotated[str, typer.Option(help="Torch device for --model (cpu, cuda).")] = "cpu",
    json_: Annotated[bool, typer.Option("--json", help="Print per-class volumes (ml) and lesion counts as JSON.")] = False,
) -> None:
    """Segment one volume with a registry model, in-process (--model) or on a server (--url)."""
    if (model is None) == (url is None):
        raise VoxrayError("give exactly one of --model (in-process) or --url (a running server)")
    if out is None and not json_:
        raise VoxrayError("nothing to do: give --out mask.nii.gz and/or --json")
    if model is not None:
        shape, summary = _predict_local(model, inputs, device, out)
    else:
        shape, summary = _predict_remote(url, inputs, api_key_env, out, json_)
    if out is not None:
        _output.result(f"wrote {out} (shape {shape})")
    if json_:
        _output.as_json(summary)


def _predict_local(model: str, inputs: list[str], device: str, out: Path | None):
    from voxray.serving.stats import mask_summary
    from voxray.training.channels import name_inputs
    from voxray.training.predict import Predictor, predict_files

    predictor = Predictor.from_registry(model, device=device)
    image = predict_files(predictor, name_inputs(inputs, predictor.channels))
    if out is not None:
        image.to_filename(str(out))
    mask = image.get_fdata(dtype="float32").astype("uint8")
    return tuple(mask.shape), mask_summary(mask, image.affine, predictor.card)


def _predict_remote(url: str, inputs: list[str], api_key_env: str, out: Path | None, want_json: bool):
    from voxray.serving.client import Client
    from voxray.training.channels import name_inputs

    with Client(url, api_key_env=api_key_env) as client:
        channels = client.model()["channels"]
        named = name_inputs(inputs, channels)
        image = client.predict(named, out=out) if out is not None or not want_json else None
        summary = client.predict_json(named) if want_json else None
    shape = tuple(image.shape) if image is not None else tuple((summary or {}).get("shape", ()))
    return shape, summary


def serve(
    model: Annotated[str, typer.Argument(help="Registry entry <registry>/<name> or <registry>/<name>/<version>.")],
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address (loopback by default).")] = "127.0.0.1",
    api_key_env: Annotated[str, typer.Option(help="Env var holding the API key (k1,k2 for rotation).")] = (
        "VOXRAY_API_KEY"),
    allow_anonymous: Annotated[bool, typer.Option(
        "--allow-anonymous", help="Serve without a key (loopback --host only).")] = False,
    max_batch_size: Annotated[int, typer.Option(help="Requests batched into one forward pass.")] = 4,
    gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per replica (bf16).")] = False,
) -> None:
    """Serve a registry model over HTTP (a shortcut for a `kind: serve` job); Ctrl-C stops."""
    from voxray.platform.specs.loader import validate_job
    from voxray.platform.stages import run_job
    from voxray.serving.auth import server_digests

    job = validate_job({"kind": "serve", "name": "voxray-serve", "serve": {
        "model": model, "host": host, "port": port, "api_key_env": None if allow_anonymous else api_key_env,
        "allow_anonymous": allow_anonymous,
        "max_batch_size": max_batch_size, "use_gpu": gpu}}, source="voxray serve", base_dir=Path.cwd())
    server_digests(job.serve.api_key_env, job.serve.allow_anonymous, host)  # before Ray starts: fail fast
    res = run_job(job)
    if res.summary:
        _output.table([{"item": k, "value": v} for k, v in res.summary.items()], title="serve summary")


def register(app: typer.Typer) -> None:
    app.command(epilog=PREDICT_EXAMPLES)(predict)
    app.command(epilog=SERVE_EXAMPLES)(serve)

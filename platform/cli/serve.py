"""Serving verbs: `voxray predict` (in-process from the registry, or over HTTP with --url) and `voxray serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from voxray.platform.cli import _output
from voxray.platform.errors import VoxrayError

PREDICT_EXAMPLES = """
Examples:

  voxray predict --model registry/brats --input flair=flair.nii.gz --input t1=t1.nii.gz
      --input t1ce=t1ce.nii.gz --input t2=t2.nii.gz --out mask.nii.gz

  voxray predict --model registry/brats/3 --input case_0001.nii.gz --out mask.nii.gz    (one 4D image)

  voxray predict --model registry/brats --input case_0001.nii.gz --out mask.nii.gz --tta mirror
      --probabilities probs.nii.gz --uncertainty entropy.nii.gz --batch 8 --device cuda

  voxray predict --model registry/brats-cv --input case_0001.nii.gz --out mask.nii.gz --backend onnxruntime
      (an ensemble entry from `voxray export --ensemble`, members run by onnxruntime after `export --onnx`)

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
_SETTINGS = "Default: the model card's `inference:` block."


def predict(
    inputs: InputOpt,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the mask NIfTI here.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry entry <registry>/<name> or <registry>/<name>/<version> "
                                                 "(predicts in this process).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="A voxray server's base URL (predicts over HTTP).")] = None,
    api_key_env: Annotated[str, typer.Option(help="Env var with the server's API key (--url).")] = "VOXRAY_API_KEY",
    probabilities: Annotated[Optional[Path], typer.Option(
        "--probabilities", help="Write class probabilities here: 4D NIfTI, one volume per class.")] = None,
    uncertainty: Annotated[Optional[Path], typer.Option(
        "--uncertainty", help="Write predictive entropy here (4D with the TTA member variance as 2nd volume "
                              "when TTA is on).")] = None,
    tta: Annotated[Optional[str], typer.Option(
        "--tta", help=f"Mirror test-time augmentation: none, mirror (all axes) or axes such as 0,2. {_SETTINGS}",
        show_default=False)] = None,
    window: Annotated[Optional[str], typer.Option(
        "--window", help=f"Sliding window: 64 (a cube) or 64,64,32 (--model). {_SETTINGS}", show_default=False)] = None,
    overlap: Annotated[Optional[float], typer.Option("--overlap", help=f"Window overlap 0–0.95 (--model). {_SETTINGS}",
                                                     show_default=False)] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help=f"Windows per forward pass (--model). {_SETTINGS}",
                                                 show_default=False)] = None,
    device: Annotated[Optional[str], typer.Option(help=f"auto, cpu, cuda, cuda:N (--model). {_SETTINGS}",
                                                  show_default=False)] = None,
    precision: Annotated[Optional[str], typer.Option(help=f"auto, fp32, bf16, fp16 (--model). {_SETTINGS}",
                                                     show_default=False)] = None,
    backend: Annotated[Optional[str], typer.Option(
        help=f"torch, or onnxruntime (CPU; after `voxray export --onnx`) (--model). {_SETTINGS}",
        show_default=False)] = None,
    qa: Annotated[Optional[str], typer.Option(
        "--qa", help=f"Input QA against the training fingerprint: warn (report), refuse (exit 4 on a warning), off "
                     f"(--model). {_SETTINGS}", show_default=False)] = None,
    series: Annotated[Optional[list[str]], typer.Option(
        "--series", help="DICOM input: <channel>=<regex> over SeriesDescription/ProtocolName (repeatable; --model). "
                         "Default: a directory/zip folder/name= naming the channel, else channel names as words of "
                         "the SeriesDescription.", show_default=False)] = None,
    dicom_seg: Annotated[bool, typer.Option(
        "--dicom-seg", help="Write --out as a DICOM-SEG over the input series (DICOM input; implied by --out "
                            "*.dcm).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print per-class volumes (ml), lesion counts and the "
                                                       "uncertainty score as JSON.")] = False,
) -> None:
    """Segment one volume with a registry model, in-process (--model) or on a server (--url)."""
    if (model is None) == (url is None):
        raise VoxrayError("give exactly one of --model (in-process) or --url (a running server)")
    if out is None and probabilities is None and uncertainty is None and not json_:
        raise VoxrayError("nothing to do: give --out mask.nii.gz (and/or --probabilities, --uncertainty, --json)")
    files = {"mask": out, "probabilities": probabilities, "uncertainty": uncertainty}
    if model is not None:
        overrides = {"window": _window(window), "overlap": overlap, "batch": batch, "device": device,
                     "precision": precision, "tta": None if tta is None else _tta(tta), "qa": qa,
                     "backend": backend}
        summary = _predict_local(model, inputs, files, overrides, _dicom_options(series, dicom_seg, out))
    else:
        local_only = [f"--{k}" for k, v in {"window": window, "overlap": overlap, "batch": batch, "device": device,
                                             "precision": precision, "qa": qa, "backend": backend}.items()
                      if v is not None]
        if local_only:
            raise VoxrayError(f"{', '.join(local_only)} apply to --model only: a server uses its own settings")
        if series:
            raise VoxrayError("--series applies to --model only: a server matches series by its serve spec")
        summary = _predict_remote(url, inputs, api_key_env, files, tta, _dicom_options(None, dicom_seg, out))
    say = _output.result if not json_ else (lambda m: _output.err_console.print(m, highlight=False))  # JSON alone
    for name, path in files.items():
        if path is not None:
            say(f"wrote {name} {path} (shape {tuple(summary['shapes'][name])})")
    unc = summary["uncertainty"]
    rank = (f", percentile {unc['percentile']:g} among {unc['reference_cases']} validation cases"
            if unc.get("percentile") is not None else "")
    say(f"uncertainty: mean entropy {unc['score']:.4f} (max {unc['max_entropy']:.3f}) over the "
                   f"predicted {'foreground' if unc['region'] == 'foreground' else 'scan (nothing predicted)'}, "
                   f"{unc['voxels']} voxels, TTA members {unc['tta_members']}{rank}")
    _qa_lines(summary.get("qa"))
    if json_:
        summary.pop("shapes")
        _output.as_json(summary)


def _qa_lines(report: dict | None) -> None:
    """The input QA result on stderr: one warning line per finding (nothing for a clean input)."""
    for f in (report or {}).get("findings") or ():
        where = f" ({f['channel']})" if f.get("channel") else ""
        _output.warning(f"input QA {f['severity']}: {f['code']}{where}: {f['message']}")


def _window(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.replace("x", ",").replace(" ", ",").split(",") if p]
    except ValueError:
        raise VoxrayError(f"--window {text!r}: give 1 size (a cube) or one per axis, e.g. 64 or 64,64,32") from None


def _tta(text: str) -> Any:
    from voxray.platform.specs.inference import parse_tta

    try:
        return parse_tta(text)
    except ValueError as exc:
        raise VoxrayError(f"--tta: {exc}") from None


def _dicom_options(series: list[str] | None, seg: bool, out: Path | None) -> dict[str, Any]:
    """{"rule": {channel: regex} or None, "seg": write --out as DICOM-SEG} from --series / --dicom-seg / --out."""
    import re

    rule = {}
    for item in series or ():
        channel, sep, pattern = item.partition("=")
        if not sep or not channel or not pattern:
            raise VoxrayError(f"--series {item!r}: give <channel>=<regex>, e.g. flair='(?i)flair'")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise VoxrayError(f"--series {item!r}: bad regex ({exc})") from None
        rule[channel] = pattern
    return {"rule": rule or None, "seg": seg or (out is not None and out.suffix.lower() == ".dcm")}


def _predict_local(model: str, inputs: list[str], files: dict[str, Path | None], overrides: dict[str, Any],
                   dicom: dict[str, Any]) -> dict:
    from voxray.serving.dicom_in import decode_dicom, is_dicom_path, read_paths
    from voxray.serving.dicom_seg import seg_bytes
    from voxray.serving.stats import mask_summary
    from voxray.serving.validation import Limits
    from voxray.training.channels import name_inputs
    from voxray.training.predict import Predictor, output_images, predict_images
    from voxray.training.progress import WindowProgress
    from voxray.training.registry import read_card

    window = overrides.pop("window")
    if window is not None and len(window) == 1:
        window = window * int(read_card(model).get("spatial_dims") or 3)
    predictor = Predictor.from_registry(model, window=window, **overrides)
    _output.err_console.print(f"predict: {predictor.card.get('name')} v{predictor.card.get('version')}, "
                              f"{predictor.settings.describe()}", highlight=False)
    wanted = [k for k, v in files.items() if v is not None or k == "mask"]
    with WindowProgress() as progress:
        if any(is_dicom_path(v.rpartition("=")[2]) for v in inputs):
            limits = Limits()
            volume, like = decode_dicom(read_paths(inputs, limits), predictor.channels, limits, dicom["rule"])
            prediction = predictor.predict_full(volume, wanted, progress=progress)
        else:
            prediction, like = predict_images(predictor, name_inputs(inputs, predictor.channels), wanted,
                                              progress=progress)
    images = output_images(prediction, like)
    for name, path in files.items():
        if path is not None and name == "mask" and dicom["seg"]:
            path.write_bytes(seg_bytes(prediction.mask, like, predictor.card))
        elif path is not None:
            images[name].to_filename(str(path))
    return mask_summary(prediction.mask, like.affine, predictor.card) | {
        "uncertainty": prediction.uncertainty, "qa": prediction.qa,
        "shapes": {k: list(v.shape) for k, v in images.items()}}


def _predict_remote(url: str, inputs: list[str], api_key_env: str, files: dict[str, Path | None],
                    tta: str | None, dicom: dict[str, Any]) -> dict:
    import gzip
    import json

    import nibabel as nib

    from voxray.serving.client import Client
    from voxray.serving.dicom_in import is_dicom_path
    from voxray.training.channels import name_inputs

    if dicom["seg"] or any(is_dicom_path(v.rpartition("=")[2]) for v in inputs):
        raise VoxrayError("DICOM input with --url is not supported by the CLI yet; use --model, or POST the zip to "
                          "the server's /v1/predict (Accept: application/dicom for a DICOM-SEG; docs/serving.md)")

    wanted = [k for k, v in files.items() if v is not None]
    with Client(url, api_key_env=api_key_env) as client:
        named = name_inputs(inputs, client.model()["channels"])
        if not wanted:
            return client.predict_json(named, tta=tta) | {"shapes": {}}
        bodies = client.predict_outputs(named, wanted, tta=tta)
    summary = json.loads(bodies.pop("summary.json"))
    shapes = {}
    for name in wanted:
        raw = bodies[f"{name}.nii.gz"]
        path = Path(files[name])  # type: ignore[arg-type]
        path.write_bytes(raw if path.name.endswith(".gz") else gzip.decompress(raw))
        shapes[name] = list(nib.Nifti1Image.from_bytes(gzip.decompress(raw)).shape)
    return summary | {"shapes": shapes}


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

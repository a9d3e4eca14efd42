"""`voxray demo`: synthetic MSD-BraTS → pipeline (preprocess → sweep → export → serve) → real HTTP requests with
held-back cases → mask NIfTIs, an overlay PNG, and per-region Dice of the masks that came back over HTTP beside the
Dice of a non-learned per-voxel baseline (fitted on the store's training voxels) on the same cases."""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxray.platform.errors import JobFailed, SpecError, VoxrayError
from voxray.platform.specs import load_job
from voxray.platform.specs.job import PipelineJob

log = logging.getLogger(__name__)
DEMO_CASES = 10
DEMO_HOLDOUT = 5
DEMO_SHAPE = (48, 48, 40)
HOLDOUT_SEED = 9_999


@dataclass
class DemoResult:
    quality: list[dict]
    """Per region (and `mean`): model Dice, baseline Dice and the gain, averaged over the held-back cases."""
    artefacts: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)
    tables: list = field(default_factory=list)


def ensure_datasets(job: PipelineJob) -> tuple[Path, Path]:
    """Synthesise the training set and one held-back labelled case (skipped when already there)."""
    from voxray.preprocessing.synth import synth_dataset

    root = Path(job.preprocess.dataset.root)
    holdout = root.parent / f"{root.name}_holdout"
    if not (root / "dataset.json").exists():
        synth_dataset("msd_brats", root, cases=DEMO_CASES, seed=0, shape=DEMO_SHAPE)
    if not (holdout / "dataset.json").exists() or len(held_back_cases(holdout)) < DEMO_HOLDOUT:
        synth_dataset("msd_brats", holdout, cases=DEMO_HOLDOUT, seed=HOLDOUT_SEED, shape=DEMO_SHAPE)
    return root, holdout


def held_back_cases(holdout: Path) -> list[tuple[Path, Path]]:
    """(4D image, label) of every held-back case, found by the msd_brats adapter (which skips macOS `._*` files)."""
    from voxray.preprocessing.datasets import get_adapter

    return [(Path(c.images["image"]), Path(c.label)) for c in get_adapter("msd_brats").discover(holdout)]


def baseline_masks(store_path: str, model_dir: str, images: list[Path]) -> list[np.ndarray]:
    """Masks of the per-voxel baseline, fitted on the store's labelled (training) cases and run through the served
    model's own prediction path (same card: transform, task decoding, background rule, inverse to the input grid)."""
    from voxray.preprocessing.store import Store
    from voxray.training.data import channel_indices
    from voxray.training.predict import Predictor, load_images, volume_from_images
    from voxray.training.registry import read_card
    from voxray.training.validation import fit_store_baseline

    card = read_card(model_dir)
    store = Store.open(store_path)
    baseline = fit_store_baseline(store, store.labelled_case_ids(), card["task"], store.metadata(),
                                  channels=channel_indices(store.channels, card["channels"]))
    predictor = Predictor(baseline, card)
    return [predictor.predict(volume_from_images(load_images(p), predictor.channels)) for p in images]


def quality_table(model: list[dict[str, float]], baseline: list[dict[str, float]]) -> list[dict]:
    """Rows region → model Dice, baseline Dice, gain (means over the cases), with the number of cases."""
    from voxray.training.baseline import dice_table

    def mean(per_case: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([d[k] for d in per_case])) for k in per_case[0]}

    return dice_table(mean(model), mean(baseline), cases=len(model))


def overlay_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, out: Path,
                affine: np.ndarray | None = None) -> Path:
    """Axial slice with the most tumour as the viewer shows it (anterior up, radiological, R/L/A/P markers): FLAIR
    with ground truth (left) and prediction (right) in class colours; `affine` orients the NIfTI arrays."""
    from voxray.preprocessing.overlay import axial_display, ras_volume, render_axial

    aff = np.eye(4) if affine is None else np.asarray(affine)
    img, lab, prd = (ras_volume(a, aff) for a in (image, truth, pred))
    k = int(np.argmax((lab > 0).sum(axis=(0, 1))))
    return render_axial(axial_display(img[..., k]), [(axial_display(lab[..., k]), f"ground truth, slice {k}"),
                                                    (axial_display(prd[..., k]), "prediction (over HTTP)")], out)


def request_prediction(url: str, image_path: Path, api_key: str | None, out: Path) -> Path:
    """POST one 4D NIfTI to /v1/predict with the voxray client and save the returned mask."""
    from voxray.serving.client import Client

    out.parent.mkdir(parents=True, exist_ok=True)
    with Client(url, api_key, api_key_env=None) as client:
        client.predict(image_path, out=out)
    return out


def _artefacts(summary: dict) -> dict[str, str]:
    """Every artefact path the pipeline reported, plus the MLflow store, the best trial's curves and a store preview."""
    out: dict[str, str] = {}
    for key, value in summary.items():
        name = key.split(".", 1)[-1]
        values = value if isinstance(value, list) else [value]
        for i, v in enumerate(values):
            if isinstance(v, str) and ("/" in v or v.startswith("http")):
                out[f"{name}[{i}]" if len(values) > 1 else name] = v
    tune_dir = summary.get("tune.tune_dir")
    if tune_dir:
        out["mlflow"] = f"sqlite:///{Path(tune_dir) / 'mlflow.db'}"
        best = summary.get("tune.best_trial")
        if best and (Path(tune_dir) / "trials" / str(best) / "progress.png").exists():
            out["best_trial_progress"] = str(Path(tune_dir) / "trials" / str(best) / "progress.png")
    store = summary.get("preprocess.store")
    if store:
        out["store_preview"] = _store_preview(store)
    return out


def _store_preview(store_path: str) -> str:
    from voxray.preprocessing.store import Store
    from voxray.preprocessing.store.preview import preview_png

    store = Store.open(store_path)
    case_id = store.case_ids()[0]
    out = Path(store_path).parent / "prediction" / f"store_preview_{case_id}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    preview_png(store, case_id, out)
    return str(out)


def run_demo(job_path: Path, keep_serving: bool = False) -> DemoResult:
    """Run the demo pipeline and check the served model on the held-back cases; Serve is shut down at the end
    unless `keep_serving` (then the caller holds Ray up, see `voxray demo --keep-serving`)."""
    import nibabel as nib

    from voxray.platform.pipeline import run_pipeline
    from voxray.platform.runtime import ray_runtime
    from voxray.training.metrics import label_map_dice
    from voxray.training.registry import read_card

    job = load_job(job_path)
    if not isinstance(job, PipelineJob) or job.preprocess is None or job.serve is None:
        raise SpecError(str(job_path), ["kind: the demo needs a pipeline with preprocess, train/tune and serve"])
    t0 = time.perf_counter()
    root, holdout = ensure_datasets(job)
    key_env = job.serve.api_key_env
    if key_env and not os.environ.get(key_env):
        os.environ[key_env] = secrets.token_urlsafe(24)  # a throwaway key for this demo process
    timings = {"synth_s": time.perf_counter() - t0}
    work = Path(job.train.output).parent
    cases = held_back_cases(holdout)
    with ray_runtime(job.ray):
        t1 = time.perf_counter()
        res = run_pipeline(job)
        timings["pipeline_s"] = time.perf_counter() - t1
        if not res.ok:
            raise JobFailed(res.message or "demo pipeline failed")
        try:
            url = res.summary["serve.url"]
            t2 = time.perf_counter()
            masks = [request_prediction(url, image, os.environ.get(key_env) if key_env else None,
                                        work / "prediction" / f"{image.name.removesuffix('.nii.gz')}_mask.nii.gz")
                     for image, _ in cases]
            timings["requests_s"] = time.perf_counter() - t2
        finally:
            from ray import serve

            if not keep_serving:
                serve.shutdown()
    model_dir = str(res.summary.get("tune.model") or res.summary["train.model"])
    card = read_card(model_dir)
    t3 = time.perf_counter()
    base = baseline_masks(str(res.summary["preprocess.store"]), model_dir, [image for image, _ in cases])
    timings["baseline_s"] = time.perf_counter() - t3
    model_dice, base_dice = [], []
    for (image, label), mask_path, base_mask in zip(cases, masks, base):
        pred_img, truth_img = nib.load(mask_path), nib.load(label)
        pred, truth = np.asarray(pred_img.dataobj).astype(np.uint8), np.asarray(truth_img.dataobj).astype(np.uint8)
        if pred.shape != truth.shape or not np.allclose(pred_img.affine, truth_img.affine, atol=1e-4):
            raise VoxrayError(f"returned mask geometry {pred.shape} does not match the input {truth.shape}")
        model_dice.append(label_map_dice(pred, truth, card["task"], card))
        base_dice.append(label_map_dice(base_mask, truth, card["task"], card))
    image, label = cases[0]
    flair = np.asarray(nib.load(image).dataobj)[..., 0]
    truth0 = np.asarray(nib.load(label).dataobj).astype(np.uint8)
    png = overlay_png(flair, truth0, np.asarray(nib.load(masks[0]).dataobj).astype(np.uint8),
                      work / "prediction" / "overlay.png", nib.load(image).affine)
    artefacts = _artefacts(res.summary)
    artefacts.update({"dataset": str(root), "held_back_cases": str(holdout), "masks": str(masks[0].parent),
                      "overlay": str(png), "viewer": str(res.summary["serve.url"]).rstrip("/") + "/viewer/"})
    return DemoResult(quality=quality_table(model_dice, base_dice), artefacts=artefacts, timings=timings,
                      tables=res.tables)

"""`voxray demo`: synthetic MSD-BraTS → pipeline (preprocess → sweep → export → serve) → a real HTTP request with a
held-back case → mask NIfTI, overlay PNG and Dice computed from the mask that came back over HTTP."""

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
DEMO_SHAPE = (48, 48, 40)
HOLDOUT_SEED = 9_999
REGIONS_MSD = {"ET": (3,), "TC": (2, 3), "WT": (1, 2, 3)}


@dataclass
class DemoResult:
    dice: dict[str, float]
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
    if not (holdout / "dataset.json").exists():
        synth_dataset("msd_brats", holdout, cases=1, seed=HOLDOUT_SEED, shape=DEMO_SHAPE)
    return root, holdout


def held_back_case(holdout: Path) -> Path:
    """The held-back case's 4D image, found by the msd_brats adapter (which skips macOS `._*` files)."""
    from voxray.preprocessing.datasets import get_adapter

    case = get_adapter("msd_brats").discover(holdout)[0]
    return Path(case.images["image"])


def region_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice per BraTS region (MSD label values) with empty-and-empty = 1, plus their mean."""
    out = {}
    for name, values in REGIONS_MSD.items():
        p, t = np.isin(pred, values), np.isin(truth, values)
        denom = p.sum() + t.sum()
        out[name] = 1.0 if denom == 0 else float(2.0 * (p & t).sum() / denom)
    out["mean"] = float(np.mean([out[k] for k in REGIONS_MSD]))
    return out


def overlay_png(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, out: Path) -> Path:
    """Axial slice with the most tumour: FLAIR with ground truth (left) and prediction (right) outlines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(np.argmax((truth > 0).sum(axis=(0, 1))))
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, lab, title in ((axes[0], truth, "ground truth"), (axes[1], pred, "prediction (over HTTP)")):
        ax.imshow(image[..., k].T, cmap="gray", origin="lower")
        masked = np.ma.masked_where(lab[..., k] == 0, lab[..., k])
        ax.imshow(masked.T, cmap="autumn", alpha=0.5, origin="lower", vmin=1, vmax=3)
        ax.set_title(f"{title}, slice {k}")
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


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


def run_demo(job_path: Path) -> DemoResult:
    """Run the demo pipeline and check the served model on a held-back case; Serve is shut down at the end."""
    import nibabel as nib

    from voxray.platform.pipeline import run_pipeline
    from voxray.platform.runtime import ray_runtime

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
    with ray_runtime(job.ray):
        t1 = time.perf_counter()
        res = run_pipeline(job)
        timings["pipeline_s"] = time.perf_counter() - t1
        if not res.ok:
            raise JobFailed(res.message or "demo pipeline failed")
        try:
            url = res.summary["serve.url"]
            case = held_back_case(holdout)
            t2 = time.perf_counter()
            mask_path = request_prediction(url, case, os.environ.get(key_env) if key_env else None,
                                           work / "prediction" / f"{case.name.removesuffix('.nii.gz')}_mask.nii.gz")
            timings["request_s"] = time.perf_counter() - t2
        finally:
            from ray import serve

            serve.shutdown()
    pred_img = nib.load(mask_path)
    truth_img = nib.load(case.parent.parent / "labelsTr" / case.name)
    pred, truth = np.asarray(pred_img.dataobj).astype(np.uint8), np.asarray(truth_img.dataobj).astype(np.uint8)
    if pred.shape != truth.shape or not np.allclose(pred_img.affine, truth_img.affine, atol=1e-4):
        raise VoxrayError(f"returned mask geometry {pred.shape} does not match the input {truth.shape}")
    flair = np.asarray(nib.load(case).dataobj)[..., 0]
    png = overlay_png(flair, truth, pred, work / "prediction" / "overlay.png")
    artefacts = _artefacts(res.summary)
    artefacts.update({"dataset": str(root), "held_back_case": str(case), "mask": str(mask_path), "overlay": str(png)})
    return DemoResult(dice=region_dice(pred, truth), artefacts=artefacts, timings=timings, tables=res.tables)

"""Learning benchmark → benchmarks/results/learning.json: does each seed recipe learn more than a voxel's own
intensities tell?

For every recipe (BraTS regions with the demo-size Swin Factorizer, IBSR18 tissue labels with a 3D U-Net, LGG
binary with the 2D depth U-Net, UW-Madison bitmask multilabel with DeepLabV3+), on synthetic data of the realistic
phantom (`voxray synth`, difficulty 2 unless `--difficulty`): synth → preprocess (Ray Data) → train in-process →
validation Dice per output beside the per-voxel baseline (`training.baseline`, fitted on the training cases' voxels
only, scored on the same validation cases) and the untrained network (step 0). Same data, same cases, same
metric code on every side.

Usage: python benchmarks/learning.py [--quick] [--difficulty N] [--only lgg_tif,...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench.learning")

FACTORIZER = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4, "mlp_ratio": 2}
RECIPES = {
    "msd_brats": dict(shape=(48, 48, 40), task="brats_regions", patch=[32, 32, 32], model=FACTORIZER, lr=3e-3),
    "ibsr18": dict(shape=(48, 32, 48), task="labels", patch=[32, 32, 32], lr=1e-2,
                   model={"name": "unet", "channels": [8, 16, 32], "num_res_units": 1}),
    "lgg_tif": dict(shape=(128, 128, 12), task="binary", patch=[64, 64], lr=1e-2,
                    model={"name": "unet_depth", "depth": 3, "base_channels": 8}),
    "uwmadison_gi": dict(shape=(64, 64, 12), task="multilabel", patch=[64, 64], lr=1e-2,
                         model={"name": "deeplabv3plus", "aspp_rates": [1, 2, 3], "aspp_channels": 16}),
}


def _store(tmp: Path, layout: str, cases: int, shape, difficulty: int) -> str:
    from voxray.platform.specs.loader import validate_job
    from voxray.preprocessing.runner import run_preprocess
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset(layout, tmp / layout, cases=cases, seed=0, shape=shape, difficulty=difficulty)
    job = validate_job({"kind": "preprocess", "name": f"learn-{layout}", "preprocess": {
        "dataset": {"layout": layout, "root": str(tmp / layout)}, "store": str(tmp / f"{layout}.zarr")}},
        base_dir=tmp)
    if not run_preprocess(job).ok:
        raise RuntimeError(f"preprocessing {layout} failed")
    return str(tmp / f"{layout}.zarr")


def run_recipe(tmp: Path, layout: str, *, cases: int, steps: int, difficulty: int) -> dict:
    """Train one recipe; its step-0, final and baseline figures per output."""
    from voxray.platform.specs.loader import validate_job
    from voxray.training.baseline import metrics_vs_baseline
    from voxray.training.runner import run_train
    from voxray.training.tracking import read_metrics

    r = RECIPES[layout]
    train = {"store": _store(tmp, layout, cases, r["shape"], difficulty), "task": r["task"], "model": r["model"],
             "patch": r["patch"], "batch_size": 2, "steps": steps, "optimizer": {"lr": r["lr"]},
             "schedule": {"name": "warmup_cosine", "warmup_steps": 10},
             "validation": {"every": steps, "folds": 4, "overlap": 0.25, "at_start": True},
             "checkpoint": {"every": steps}, "scaling": {"num_workers": 0}, "sampling": {"loader_workers": 1},
             "tracking": {"mlflow": False}, "output": str(tmp / "runs"), "registry": str(tmp / "registry")}
    t0 = time.perf_counter()
    res = run_train(validate_job({"kind": "train", "name": f"learn-{layout.replace('_', '-')}", "train": train},
                                 base_dir=tmp))
    seconds = time.perf_counter() - t0
    start = {row["name"]: row["value"] for row in read_metrics(Path(res.summary["run_dir"]) / "metrics.csv")
             if row["step"] == 0}
    rows = metrics_vs_baseline(res.summary)
    for row in rows:
        row["untrained_dice"] = round(start.get(f"val/dice_{row['output']}", float("nan")), 4)
    return {"layout": layout, "task": r["task"], "model": r["model"]["name"], "steps": steps, "cases": cases,
            "train_seconds": round(seconds, 1), "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run; figures not for the README)")
    p.add_argument("--difficulty", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated layouts")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec

    layouts = [x for x in args.only.split(",") if x] or list(RECIPES)
    steps, cases = (40, 6) if args.quick else (300, 12)
    results = []
    with tempfile.TemporaryDirectory() as tmp, ray_runtime(RaySpec(num_cpus=2)):
        for layout in layouts:
            out = run_recipe(Path(tmp), layout, cases=cases, steps=steps, difficulty=args.difficulty)
            results.append(out)
            print(f"\n{layout} ({out['task']}, {out['model']}, {steps} steps, {out['train_seconds']} s)")
            print(f"{'output':<16}{'untrained':>10}{'model':>10}{'baseline':>10}{'gain':>10}")
            for row in out["rows"]:
                print(f"{row['output']:<16}{row['untrained_dice']:>10.4f}{row['model_dice']:>10.4f}"
                      f"{row['baseline_dice']:>10.4f}{row['gain']:>+10.4f}")
    payload = {"mode": "quick" if args.quick else "full", "difficulty": args.difficulty,
               "load_avg": os.getloadavg(), "results": results}
    out = HERE / "results" / ("learning_quick.json" if args.quick else "learning.json")
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

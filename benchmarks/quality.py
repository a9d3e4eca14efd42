"""Quality benchmark → benchmarks/results/quality.json: the planned recipe beside a hand-written one and the
per-voxel baseline, under the same CPU training budget, on realistic synthetic data (difficulty 2).

Datasets: synthetic MSD BraTS, IBSR18 at its own 0.94 × 1.5 × 0.94 mm, and IBSR18 with clinical 5 mm coronal
slices (anisotropic). Per dataset:
- baseline: the per-voxel Bayes classifier (`training.baseline`), fitted on the training cases' voxels, scored on
  the validation cases (the `baseline/` figures of the hand-written run; its fit is timed on its own);
- hand-written: the seed recipe of `benchmarks/learning.py` for that layout (the demo-size Swin Factorizer for
  BraTS, a small 3D U-Net for IBSR18), preprocess defaults, steps = budget × 90 % / its measured step time;
- planned: `voxray plan --hours budget` (model auto, `--memory-gb`), its own preprocess and recipe unchanged.
Both recipes validate once at the end on the same fold (4 folds, fold 0, same seed and case ids → same cases).
The budget is CPU-seconds: training runs on one torch thread and steps are timed by CPU time (`time_step`), so
other processes on a shared machine change the wall time, not the work; both are reported.
nnU-Net v2 runs from its own venv only (`make bench-peers`, never voxray's): without it the row says "peer not
installed"; with it, the row names the version and says that training it under this budget is not driven here.

Usage: python benchmarks/quality.py [--quick] [--minutes M] [--cases N] [--only msd_brats,ibsr18_5mm]
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
log = logging.getLogger("bench.quality")

DATASETS = {
    "msd_brats": dict(layout="msd_brats", shape=(48, 48, 40), spacing=None),
    "ibsr18": dict(layout="ibsr18", shape=(48, 32, 48), spacing=None),
    "ibsr18_5mm": dict(layout="ibsr18", shape=(48, 10, 48), spacing=(0.9375, 5.0, 0.9375)),
}
FOLDS = 4


def _train_common(tmp: Path, steps: int) -> dict:
    return {"steps": steps, "validation": {"every": steps, "folds": FOLDS, "fold": 0, "overlap": 0.25},
            "checkpoint": {"every": steps}, "scaling": {"num_workers": 0}, "sampling": {"loader_workers": 1},
            "tracking": {"mlflow": False}, "output": str(tmp / "runs"), "registry": str(tmp / "registry")}


def _preprocess(tmp: Path, name: str, section: dict) -> str:
    from voxray.platform.specs.loader import validate_job
    from voxray.preprocessing.runner import run_preprocess

    job = validate_job({"kind": "preprocess", "name": name, "preprocess": section}, base_dir=tmp)
    if not run_preprocess(job).ok:
        raise RuntimeError(f"preprocessing {name} failed")
    return job.preprocess.store


def _train(tmp: Path, name: str, train: dict) -> dict:
    """Train in-process; validation figures per output, HD95, wall and CPU seconds of the whole run."""
    from voxray.platform.specs.loader import validate_job
    from voxray.training.baseline import metrics_vs_baseline
    from voxray.training.runner import run_train

    job = validate_job({"kind": "train", "name": name, "train": train}, base_dir=tmp)
    wall, cpu = time.perf_counter(), time.process_time()
    res = run_train(job)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if not res.ok:
        raise RuntimeError(f"training {name} failed: {res.message}")
    rows = metrics_vs_baseline(res.summary)
    for row in rows:
        row["hd95"] = round(float(res.summary.get(f"val/hd95_{row['output']}", float("nan"))), 3)
    return {"rows": rows, "steps": job.train.steps, "patch": job.train.patch, "batch_size": job.train.batch_size,
            "model": job.train.model.model_dump(mode="json"), "wall_seconds": round(wall, 1),
            "cpu_seconds": round(cpu, 1)}


def _steps_for(train: dict, store: str, budget: float) -> tuple[int, float]:
    """Steps that fill `budget` × 90 % at the recipe's measured step time (the plan's own rule)."""
    from voxray.platform.specs.train import TrainSpec
    from voxray.preprocessing.store import Store
    from voxray.training.plan.memory import time_step

    spec = TrainSpec.model_validate({k: v for k, v in train.items() if k not in ("store",)})
    s = Store.open(store)
    step = time_step(spec, s.metadata(), len(s.channels))
    return max(2, int(budget * 0.9 / step)), step


def hand_written(tmp: Path, key: str, root: Path, budget: float) -> dict:
    import learning

    layout = DATASETS[key]["layout"]
    r = learning.RECIPES[layout]
    store = _preprocess(tmp, f"hand-{key}", {"dataset": {"layout": layout, "root": str(root)},
                                             "store": str(tmp / f"hand-{key}.zarr")})
    train = {"store": store, "task": r["task"], "model": r["model"], "patch": r["patch"], "batch_size": 2,
             "optimizer": {"lr": r["lr"]}, "schedule": {"name": "warmup_cosine", "warmup_steps": 10}}
    steps, step_s = _steps_for(train, store, budget)
    out = _train(tmp, f"hand-{key.replace('_', '-')}", {**train, **_train_common(tmp, steps)})
    return {**out, "step_seconds": round(step_s, 3), "store": store}


def planned(tmp: Path, key: str, root: Path, budget: float, memory_gb: float) -> dict:
    from voxray.training.plan.fingerprint import fingerprint_for
    from voxray.training.plan.recipe import PlanOptions, make_plan

    t0 = time.perf_counter()
    fp = fingerprint_for(root, DATASETS[key]["layout"])
    plan = make_plan(fp, PlanOptions(hours=budget / 3600, memory_gb=memory_gb, name=f"plan-{key}",
                                     store=str(tmp / f"plan-{key}.zarr")), tmp)
    plan_seconds = time.perf_counter() - t0
    (tmp / f"plan-{key}.yaml").write_text(plan.yaml())
    store = _preprocess(tmp, f"plan-{key}", plan.job["preprocess"])
    train = {k: v for k, v in plan.job["train"].items() if k not in ("validation", "checkpoint", "scaling", "steps")}
    out = _train(tmp, f"plan-{key.replace('_', '-')}",
                 {**train, "store": store, **_train_common(tmp, plan.job["train"]["steps"])})
    return {**out, "plan_seconds": round(plan_seconds, 1), "step_seconds": round(plan.details["step_seconds"], 3),
            "resampling": plan.job["preprocess"]["resampling"]["scheme"], "yaml": plan.yaml()}


def baseline(store: str, budget_row: dict) -> dict:
    """Time the baseline's fit on the training fold (the figures come from the hand-written run's validation)."""
    from voxray.preprocessing.store import Store
    from voxray.training.data import load_or_make_split
    from voxray.platform.specs.train import ValidationSpec
    from voxray.training.validation import fit_store_baseline

    s = Store.open(store)
    split = load_or_make_split(Path(tempfile.mkdtemp()) / "split.json", s, ValidationSpec(folds=FOLDS), 0)
    wall, cpu = time.perf_counter(), time.process_time()
    fit_store_baseline(s, split["train"], budget_row["task"], s.metadata())
    return {"rows": [{"output": r["output"], "dice": r["baseline_dice"]} for r in budget_row["rows"]],
            "wall_seconds": round(time.perf_counter() - wall, 1), "cpu_seconds": round(time.process_time() - cpu, 1)}


def nnunet_peer() -> dict:
    """nnU-Net v2 lives in its own venv (`make bench-peers`, see peers.py); never in voxray's."""
    import peers

    if peers.peer_python() is None:
        return {"status": peers.NOT_INSTALLED, "why": "no .venv-peers with nnunetv2 (make bench-peers)"}
    return {"status": "installed, not run", "version": peers.peer_version(),
            "why": "the peer protocol (benchmarks/_nnunet_peer.py) plans, preprocesses and reads patches; training "
                   "nnU-Net under this CPU budget and scoring it on the same fold is not part of it"}


def run_dataset(tmp: Path, key: str, cases: int, budget: float, memory_gb: float, difficulty: int) -> dict:
    from voxray.preprocessing.synth import synth_dataset

    d = DATASETS[key]
    root = synth_dataset(d["layout"], tmp / "data" / key, cases=cases, seed=0, shape=d["shape"],
                         difficulty=difficulty, spacing=d["spacing"])
    hand = hand_written(tmp, key, root, budget)
    plan = planned(tmp, key, root, budget, memory_gb)
    hand["task"] = plan["task"] = learning_task(key)
    base = baseline(hand.pop("store"), hand)
    return {"dataset": key, "cases": cases, "budget_seconds": budget, "baseline": base, "hand_written": hand,
            "planned": plan, "nnunet": nnunet_peer()}


def learning_task(key: str) -> str:
    import learning

    return learning.RECIPES[DATASETS[key]["layout"]]["task"]


def _print(result: dict) -> None:
    hand, plan, base = result["hand_written"], result["planned"], result["baseline"]
    print(f"\n{result['dataset']}: {result['cases']} cases, {result['budget_seconds']:.0f} s training budget per recipe")
    print(f"  hand-written: {hand['model']['name']} patch {hand['patch']} × {hand['batch_size']}, {hand['steps']} steps, "
          f"{hand['wall_seconds']} s wall / {hand['cpu_seconds']} s CPU")
    print(f"  planned:      {plan['model']['name']} patch {plan['patch']} × {plan['batch_size']}, {plan['steps']} steps, "
          f"{plan['resampling']}, {plan['wall_seconds']} s wall / {plan['cpu_seconds']} s CPU "
          f"(+{plan['plan_seconds']} s planning)")
    print(f"  {'output':<16}{'baseline':>10}{'hand':>10}{'planned':>10}{'hd95 hand':>11}{'hd95 plan':>11}")
    planned_rows = {r["output"]: r for r in plan["rows"]}
    for row in hand["rows"]:
        p = planned_rows.get(row["output"], {})
        print(f"  {row['output']:<16}{row['baseline_dice']:>10.4f}{row['model_dice']:>10.4f}"
              f"{p.get('model_dice', float('nan')):>10.4f}{row['hd95']:>11.2f}{p.get('hd95', float('nan')):>11.2f}")
    print(f"  nnU-Net v2: {result['nnunet']['status']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller budget and fewer cases (a smoke run)")
    p.add_argument("--minutes", type=float, default=None, help="training budget per recipe (default 4, quick 1)")
    p.add_argument("--cases", type=int, default=None, help="cases per dataset (default 12, quick 8)")
    p.add_argument("--memory-gb", type=float, default=2.0, help="memory budget handed to voxray plan")
    p.add_argument("--difficulty", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated datasets: " + ", ".join(DATASETS))
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import torch

    torch.set_num_threads(1)  # both recipes alike; a CPU budget in CPU-seconds, stable on a shared machine
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec

    budget = 60 * (args.minutes or (1.0 if args.quick else 4.0))
    cases = args.cases or (8 if args.quick else 12)
    keys = [k for k in args.only.split(",") if k] or list(DATASETS)
    results = []
    with tempfile.TemporaryDirectory() as tmp, ray_runtime(RaySpec(num_cpus=2)):
        for key in keys:
            results.append(run_dataset(Path(tmp), key, cases, budget, args.memory_gb, args.difficulty))
            _print(results[-1])
    payload = {"mode": "quick" if args.quick else "full", "difficulty": args.difficulty, "budget_seconds": budget,
               "torch_threads": torch.get_num_threads(), "load_avg": os.getloadavg(), "results": results}
    out = HERE / "results" / ("quality_quick.json" if args.quick else "quality.json")
    out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

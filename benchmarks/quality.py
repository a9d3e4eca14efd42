"""Quality benchmark → benchmarks/results/quality.json: the planned recipe beside a hand-written one and the
per-voxel baseline, under the same CPU training budget, on realistic synthetic data (difficulty 2).

Datasets: synthetic MSD BraTS, IBSR18 at its own 0.94 × 1.5 × 0.94 mm, and IBSR18 with clinical 5 mm coronal
slices (anisotropic). Per dataset:
- baseline: the per-voxel Bayes classifier (`training.baseline`), fitted on the training cases' voxels, scored on
  the validation cases (the `baseline/` figures of the hand-written run; its fit is timed on its own);
- hand-written: the seed recipe of `benchmarks/learning.py` for that layout (the demo-size Swin Factorizer for
  BraTS, a small 3D U-Net for IBSR18), preprocess defaults, steps = budget × 90 % / its measured step time;
- planned: `voxray plan --hours budget` (model auto, `--memory-gb`), its own preprocess and recipe unchanged.
- nnU-Net v2 (when `make bench-peers` installed it in .venv-peers; never in voxray's venv): its own planning,
  preprocessing, trainer and predictor on the CPU, iterations fitted to the same budget (quality_nnunet.py,
  _nnunet_train_peer.py), its exported masks scored here with voxray's Dice/HD95; without the venv the row says so.
Every arm trains once per seed (`--seeds`, default 2), interleaved, on the seed's split (4 folds, fold 0: the same
3 validation cases for every arm of a seed), and the figures are the means over seeds: with 3 validation cases one
run's mean Dice moves by a few hundredths between seeds.
The budget is CPU-seconds: training runs on one torch thread and steps are timed by CPU time (`time_step`), so
other processes on a shared machine change the wall time, not the work; both are reported.

Usage: python benchmarks/quality.py [--quick] [--minutes M] [--cases N] [--seeds S] [--only msd_brats,ibsr18_5mm]
       [--no-nnunet] [--out PATH]
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
    """The seed recipe of benchmarks/learning.py for this layout, its steps from the budget (trained per seed later)."""
    import learning

    layout = DATASETS[key]["layout"]
    r = learning.RECIPES[layout]
    store = _preprocess(tmp, f"hand-{key}", {"dataset": {"layout": layout, "root": str(root)},
                                             "store": str(tmp / f"hand-{key}.zarr")})
    train = {"store": store, "task": r["task"], "model": r["model"], "patch": r["patch"], "batch_size": 2,
             "optimizer": {"lr": r["lr"]}, "schedule": {"name": "warmup_cosine", "warmup_steps": 10}}
    steps, step_s = _steps_for(train, store, budget)
    return {"name": f"hand-{key}", "train": train, "steps": steps, "step_seconds": round(step_s, 3), "store": store}


def planned(tmp: Path, key: str, root: Path, budget: float, memory_gb: float) -> dict:
    """`voxray plan`'s job for this dataset: planned once, its own preprocess, trained per seed later."""
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
    return {"name": f"plan-{key}", "train": {**train, "store": store}, "steps": plan.job["train"]["steps"],
            "plan_seconds": round(plan_seconds, 1), "step_seconds": round(plan.details["step_seconds"], 3),
            "resampling": plan.job["preprocess"]["resampling"]["scheme"], "yaml": plan.yaml()}


def train_seeds(tmp: Path, arms: dict[str, dict], seeds: list[int]) -> dict[str, dict]:
    """Train every arm once per seed, interleaved (seed 0: hand, plan, nnU-Net; seed 1: …) so a change in machine
    load over the run falls on every arm alike. A seed sets the split (the same for every arm), init and sampling.
    An arm is a voxray recipe (`train`, `steps`) or a peer (`peer.run(seed)`)."""
    runs: dict[str, list[dict]] = {k: [] for k in arms}
    for seed in seeds:
        for key, arm in arms.items():
            if "peer" in arm:
                out = arm["peer"].run(seed)
            else:
                name = f"{arm['name']}-s{seed}".replace("_", "-")
                out = _train(tmp, name, {**arm["train"], **_train_common(tmp, arm["steps"]), "seed": seed})
            runs[key].append({"seed": seed, **out})
    result = {}
    for key, arm in arms.items():
        same = ("steps", "patch", "batch_size", "model", "plan")
        first = runs[key][0]
        result[key] = {**{k: v for k, v in arm.items() if k not in ("train", "name", "store", "peer")},
                       "rows": mean_rows([r["rows"] for r in runs[key]]),
                       **{k: first[k] for k in same if k in first},
                       "wall_seconds": round(sum(r["wall_seconds"] for r in runs[key]) / len(seeds), 1),
                       "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs[key]) / len(seeds), 1),
                       "seeds": [{k: v for k, v in r.items() if k not in same} for r in runs[key]]}
    return result


def mean_rows(per_seed: list[list[dict]]) -> list[dict]:
    """Per-output means over seeds of model Dice, baseline Dice, gain and HD95 (rows matched by output name)."""
    out = []
    for row in per_seed[0]:
        same = [next(r for r in rows if r["output"] == row["output"]) for rows in per_seed]
        mean = {k: round(sum(r[k] for r in same) / len(same), 4)
                for k in ("model_dice", "baseline_dice", "gain", "hd95") if k in row}
        out.append({"output": row["output"], **mean})
    return out


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


def nnunet_arm(tmp: Path, key: str, root: Path, store: str, budget: float) -> dict:
    """nnU-Net v2 from its own venv (`make bench-peers`, see quality_nnunet.py): an arm when installed, else a row
    that says why it is missing."""
    import peers
    import quality_nnunet

    if peers.peer_python() is None:
        return {"status": peers.NOT_INSTALLED, "why": "no .venv-peers with nnunetv2 (make bench-peers)"}
    peer = quality_nnunet.NnUNetArm(tmp, key, DATASETS[key]["layout"], root, store, learning_task(key), FOLDS,
                                    budget, 901 + list(DATASETS).index(key))
    return {"status": "run", "version": peer.version, "peer": peer}


def run_dataset(tmp: Path, key: str, cases: int, budget: float, memory_gb: float, difficulty: int,
                seeds: list[int], with_nnunet: bool = True) -> dict:
    from voxray.preprocessing.synth import synth_dataset

    d = DATASETS[key]
    root = synth_dataset(d["layout"], tmp / "data" / key, cases=cases, seed=0, shape=d["shape"],
                         difficulty=difficulty, spacing=d["spacing"])
    hand = hand_written(tmp, key, root, budget)
    store = hand["store"]
    arms = {"hand_written": hand, "planned": planned(tmp, key, root, budget, memory_gb)}
    nnunet = nnunet_arm(tmp, key, root, store, budget) if with_nnunet else {"status": "not run (--no-nnunet)"}
    if "peer" in nnunet:
        arms["nnunet"] = nnunet
    arms = train_seeds(tmp, arms, seeds)
    for arm in arms.values():
        arm["task"] = learning_task(key)
    if "nnunet" in arms:
        arms["nnunet"]["preprocess"] = nnunet["peer"].preprocess
    base = baseline(store, arms["hand_written"])
    return {"dataset": key, "cases": cases, "budget_seconds": budget, "seeds": seeds, "baseline": base,
            "nnunet": nnunet, **arms}


def learning_task(key: str) -> str:
    import learning

    return learning.RECIPES[DATASETS[key]["layout"]]["task"]


def _print(result: dict) -> None:
    hand, plan, base = result["hand_written"], result["planned"], result["baseline"]
    print(f"\n{result['dataset']}: {result['cases']} cases, {result['budget_seconds']:.0f} s training budget per recipe, "
          f"means over seeds {result['seeds']}")
    print(f"  hand-written: {hand['model']['name']} patch {hand['patch']} × {hand['batch_size']}, {hand['steps']} steps, "
          f"{hand['wall_seconds']} s wall / {hand['cpu_seconds']} s CPU")
    print(f"  planned:      {plan['model']['name']} patch {plan['patch']} × {plan['batch_size']}, {plan['steps']} steps, "
          f"{plan['resampling']}, {plan['wall_seconds']} s wall / {plan['cpu_seconds']} s CPU "
          f"(+{plan['plan_seconds']} s planning)")
    nn = result["nnunet"]
    if "rows" in nn:
        t = nn["seeds"][0]["train"]
        print(f"  nnU-Net v{nn['version']}: {nn['plan']['network']} {nn['plan']['features']} patch "
              f"{nn['plan']['patch']} × {nn['plan']['batch_size']}, {t['iterations']} iterations "
              f"({t['step_seconds']:.3g} s each), {nn['wall_seconds']} s wall / {nn['cpu_seconds']} s CPU")
    arms = {"hand": hand["rows"], "planned": plan["rows"], **({"nnU-Net": nn["rows"]} if "rows" in nn else {})}
    print(f"  {'output':<16}{'baseline':>10}" + "".join(f"{a:>10}" for a in arms)
          + "".join(f"{'hd95 ' + a:>14}" for a in arms))
    for row in hand["rows"]:
        got = [next((r for r in rows if r["output"] == row["output"]), {}) for rows in arms.values()]
        print(f"  {row['output']:<16}{row['baseline_dice']:>10.4f}"
              + "".join(f"{g.get('model_dice', float('nan')):>10.4f}" for g in got)
              + "".join(f"{g.get('hd95', float('nan')):>14.2f}" for g in got))
    if "rows" not in nn:
        print(f"  nnU-Net v2: {nn['status']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller budget and fewer cases (a smoke run)")
    p.add_argument("--minutes", type=float, default=None, help="training budget per recipe (default 4, quick 1)")
    p.add_argument("--cases", type=int, default=None, help="cases per dataset (default 12, quick 8)")
    p.add_argument("--memory-gb", type=float, default=2.0, help="memory budget handed to voxray plan")
    p.add_argument("--difficulty", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated datasets: " + ", ".join(DATASETS))
    p.add_argument("--update", action="store_true", help="keep the other datasets' results already in the JSON")
    p.add_argument("--no-nnunet", action="store_true", help="skip the nnU-Net arm even when .venv-peers has it")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/quality[_quick].json)")
    p.add_argument("--seeds", type=int, default=None, help="training seeds per recipe, interleaved; figures are "
                                                            "their means (default 2, quick 1)")
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
    seeds = list(range(args.seeds or (1 if args.quick else 2)))
    results = []
    with tempfile.TemporaryDirectory() as tmp, ray_runtime(RaySpec(num_cpus=2)):
        for key in keys:
            results.append(run_dataset(Path(tmp), key, cases, budget, args.memory_gb, args.difficulty, seeds,
                                       not args.no_nnunet))
            results[-1].update(load_avg=os.getloadavg(), finished=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
            _print(results[-1])
    out = args.out or HERE / "results" / ("quality_quick.json" if args.quick else "quality.json")
    if args.update and out.is_file():  # other datasets keep their figures from an earlier run (each says when)
        done = {r["dataset"] for r in results}
        results += [r for r in json.loads(out.read_text())["results"] if r["dataset"] not in done]
        results.sort(key=lambda r: list(DATASETS).index(r["dataset"]))
    payload = {"mode": "quick" if args.quick else "full", "difficulty": args.difficulty, "budget_seconds": budget,
               "torch_threads": torch.get_num_threads(), "results": results}
    out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

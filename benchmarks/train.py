"""Training benchmarks → benchmarks/results/train.json (every timing in interleaved rounds, benchmarks/_timing.py).

- loader_overhead: a training step fed by the real store loader (PatchBatches: threads reading zarr + the recipe's
  MONAI augmentation) ÷ the same step on batches already in memory, paired per round (goal ≤ 1.10). Full mode uses
  the Factorizer recipe's patch (128³, batch 1, flip 0.5 / affine 0.15 / intensity 0.15) with the demo-size Swin
  Factorizer (widths 8-16-32-64, window 4) on BraTS-size cases; `_noaug` = the same without augmentation (I/O only).
  On a 2-core machine the loader's threads take CPU from the step, so this is an upper bound for real hardware;
  `loader_overhead_cpu` (process CPU time, loader threads included) is what the loader costs where cores are scarce.
- ray_data_vs_direct: loader only, a Ray Data pipeline (rows → map → iter_torch_batches) doing the same reads and
  augmentations ÷ the direct threaded loader (> 1 = Ray Data slower; info).
- ddp_speedup_2w: samples/s of 2 CPU workers ÷ 1 worker (Ray Train, gloo), steady-state rate (info: 2 cores).

(`sw_vs_monai` is gone: it timed a wrapper of MONAI's sliding window against that same call. Inference figures are
in benchmarks/predict.py.) Usage: python benchmarks/train.py [--quick] [--repeats N] [--max-spread X]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Measured, Results, Stat, add_arguments, interleave, paired  # noqa: E402

log = logging.getLogger("bench.train")
FACTORIZER = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4, "mlp_ratio": 2}
RECIPE_AUG = {"flip": 0.5, "affine": 0.15, "intensity": 0.15}


def build_store(tmp: Path, cases: int, shape: tuple[int, int, int]) -> str:
    from voxray.platform.specs.loader import validate_job
    from voxray.preprocessing.runner import run_preprocess
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset("msd_brats", tmp / "raw", cases=cases, seed=0, shape=shape)
    job = validate_job({"kind": "preprocess", "name": "bench", "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(tmp / "raw")}, "store": str(tmp / "b.zarr")}}, base_dir=tmp)
    run_preprocess(job)
    return str(tmp / "b.zarr")


def _factorizer(patch: list[int]):
    from pydantic import TypeAdapter

    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import build_model

    torch.manual_seed(0)
    return build_model(TypeAdapter(ModelSpec).validate_python(FACTORIZER), in_channels=4, out_channels=3,
                       spatial_dims=3, patch=patch)


def loader_overhead(store_uri: str, patch: list[int], repeats: int, steps: int, augment: bool,
                    res: Results) -> None:
    """Step time with the loader ÷ step time on 4 batches cycled from memory, `steps` steps per round."""
    from voxray.platform.specs.train import AugmentSpec, LossSpec, ScheduleSpec
    from voxray.preprocessing.store import Store
    from voxray.training.data import PatchBatches
    from voxray.training.loop import train_step
    from voxray.training.losses import build_loss
    from voxray.training.schedules import build_scheduler

    store = Store.open(store_uri)
    loader = PatchBatches(store, store.case_ids(), patch=patch, batch_size=1, task="brats_regions",
                          meta=store.metadata(), augment=AugmentSpec(enabled=augment, **RECIPE_AUG), workers=2,
                          prefetch=2, fg_fraction=0.0)
    memory = [next(loader) for _ in range(4)]
    model, loss = _factorizer(patch), build_loss(LossSpec(), "brats_regions")
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    sched = build_scheduler(opt, ScheduleSpec(name="constant"), 10**6)
    cpu = torch.device("cpu")
    cursor = {"i": 0}

    def from_memory():
        cursor["i"] += 1
        return memory[cursor["i"] % len(memory)]

    def run(source) -> None:
        for _ in range(steps):
            train_step(model, [source()], loss, opt, sched, device=cpu, precision="fp32")

    rounds = interleave({"memory": lambda: run(from_memory), "loader": lambda: run(lambda: next(loader))}, repeats,
                        log=log.info)
    loader.close()
    res.rounds(rounds)
    tag = "" if augment else "_noaug"
    res.stat(f"step_s_memory{tag}", Stat([v / steps for v in rounds.wall["memory"].samples]))
    res.stat(f"step_s_loader{tag}", Stat([v / steps for v in rounds.wall["loader"].samples]))
    res.stat(f"loader_overhead{tag}", paired(rounds.wall["loader"], rounds.wall["memory"]), gate=augment)
    # CPU time counts the loader threads' work too: what the loader costs where cores are scarce
    res.stat(f"loader_overhead_cpu{tag}", paired(rounds.cpu["loader"], rounds.cpu["memory"]))


def ingest_compare(store_uri: str, patch: list[int], batches: int, repeats: int, res: Results) -> None:
    """Loader only (no model): the direct threaded zarr loader vs a Ray Data pipeline doing the same work
    (patch requests as rows → map(read + augment + encode) → iter_torch_batches), as `get_dataset_shard` would."""
    import ray

    from voxray.platform.specs.train import AugmentSpec
    from voxray.preprocessing.store import Store
    from voxray.training.augment import Augmenter
    from voxray.training.data import PatchBatches
    from voxray.training.sampler import PatchRequest, PatchSampler, read_patch
    from voxray.training.tasks import encode_target

    store = Store.open(store_uri)
    meta = store.metadata()
    aug = AugmentSpec(**RECIPE_AUG)
    direct = PatchBatches(store, store.case_ids(), patch=patch, batch_size=2, task="brats_regions", meta=meta,
                          augment=aug, workers=2, prefetch=2)
    sampler = PatchSampler(store, store.case_ids(), patch, fg_fraction=0.33, seed=1)
    rows = [{"case_id": r.case_id, "start": list(r.start), "seed": r.seed}
            for r in (sampler.draw() for _ in range(2 * batches))]

    def sample(row: dict) -> dict:
        st = Store.open(store_uri)
        req = PatchRequest(row["case_id"], tuple(row["start"]), int(row["seed"]))
        image, label = read_patch(st, req, tuple(patch))
        img, lab = Augmenter(aug, 3)(image, label, req.seed)
        return {"image": img.numpy(), "target": encode_target(lab, "brats_regions", meta).numpy()}

    def run_direct() -> None:
        for _ in range(batches):
            next(direct)

    def run_ray() -> None:
        for _ in ray.data.from_items(rows).map(sample).iter_torch_batches(batch_size=2):
            pass

    rounds = interleave({"direct": run_direct, "ray_data": run_ray}, repeats, log=log.info)  # warm-up: workers start
    direct.close()
    res.rounds(rounds)
    res.stat("ingest_s_direct", rounds.wall["direct"])
    res.stat("ingest_s_ray_data", rounds.wall["ray_data"])
    res.stat("ray_data_vs_direct", paired(rounds.wall["ray_data"], rounds.wall["direct"]))


def ddp_speedup(store_uri: str, tmp: Path, steps: int, repeats: int, res: Results) -> None:
    from voxray.platform.specs.loader import validate_job
    from voxray.training.trainer import build_trainer

    runs = {"n": 0}

    def fit(workers: int):
        def run() -> Measured:
            runs["n"] += 1
            spec = {"store": store_uri, "task": "brats_regions",
                    "model": {"name": "unet", "channels": [16, 32, 64], "num_res_units": 1}, "patch": [32, 32, 32],
                    "batch_size": 2, "steps": steps, "validation": {"every": 10**6, "folds": 2, "max_cases": 1},
                    "checkpoint": {"every": 10**6}, "scaling": {"num_workers": workers, "cpus_per_worker": 1},
                    "sampling": {"loader_workers": 1}, "tracking": {"mlflow": False}}
            job = validate_job({"kind": "train", "name": f"ddp{workers}", "train": spec}, base_dir=tmp)
            run_dir = tmp / f"ddp{workers}-{runs['n']}"
            build_trainer(job, run_dir=run_dir).fit()
            # steady-state rate from the loop itself (worker start-up dominates short runs): seconds per sample
            its = json.loads((run_dir / "progress.json").read_text())["it_s"]
            return Measured(1.0 / (its * workers * 2), 0.0)
        return run

    rounds = interleave({"1w": fit(1), "2w": fit(2)}, repeats, warmup=0, log=log.info)
    res.rounds(rounds)
    res.stat("samples_s_1w", Stat([1 / v for v in rounds.wall["1w"].samples], unit="samples/s"))
    res.stat("samples_s_2w", Stat([1 / v for v in rounds.wall["2w"].samples], unit="samples/s"))
    res.stat("ddp_speedup_2w", paired(rounds.wall["1w"], rounds.wall["2w"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI-sized run")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "train.json")
    add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("ray").setLevel(logging.WARNING)
    q = args.quick
    res = Results("train", max_spread=args.max_spread, out=args.out)
    patch = [32, 32, 32] if q else [128, 128, 128]
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec

    with tempfile.TemporaryDirectory(prefix="voxray-bench-train-") as d, \
            ray_runtime(RaySpec(num_cpus=2, dashboard=False)):
        tmp = Path(d)
        store = build_store(tmp, cases=2 if q else 3, shape=(64, 64, 48) if q else (240, 240, 155))
        loader_overhead(store, patch, args.repeats, 1 if q else 2, True, res)
        loader_overhead(store, patch, args.repeats, 1 if q else 2, False, res)
        ingest_compare(store, [32, 32, 32] if q else [64, 64, 64], 4 if q else 10, args.repeats, res)
        ddp_speedup(store, tmp, 8 if q else 30, args.repeats, res)
    res.value("setup", {"quick": q, "torch_threads": torch.get_num_threads(), "patch": patch, "batch_size": 1,
                        "model": FACTORIZER, "augment": RECIPE_AUG, "loader_workers": 2})
    for k, v in res.data.items():
        print(f"{k:<24} {v}")
    return res.write()


if __name__ == "__main__":
    sys.exit(main())

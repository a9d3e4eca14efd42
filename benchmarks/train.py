"""Training benchmarks → benchmarks/results/train.json.

- loader_overhead: step time with the real store loader (threads reading zarr + MONAI augmentation) divided by
  the step time on batches already in memory (target ≤ 1.10); `_noaug` = the same without augmentation (I/O only).
- ddp_speedup_2w: samples/s of 2 CPU workers over 1 worker (Ray Train, gloo). Honest caveat: this machine has
  2 cores, so both workers share them with the loader threads; speed-up is capped well below 2.
- ray_data_vs_direct: loader only, a Ray Data pipeline (rows → map → iter_torch_batches) doing the same reads and
  augmentations over the direct threaded loader (> 1 = Ray Data slower).
- sw_vs_monai: our `sliding_window_predict` time over MONAI's `sliding_window_inference` called directly (≤ 1.0),
  the median of back-to-back pair ratios (robust to the load swings of a shared machine).

Usage: python benchmarks/train.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
log = logging.getLogger("bench.train")


def build_store(tmp: Path, cases: int, shape: tuple[int, int, int]) -> str:
    from voxray.platform.specs.loader import validate_job
    from voxray.preprocessing.runner import run_preprocess
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset("msd_brats", tmp / "raw", cases=cases, seed=0, shape=shape)
    job = validate_job({"kind": "preprocess", "name": "bench", "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(tmp / "raw")}, "store": str(tmp / "b.zarr"),
        "chunk": [32, 32, 32]}}, base_dir=tmp)
    run_preprocess(job)
    return str(tmp / "b.zarr")


def _model(channels=(16, 32, 64)):
    from voxray.platform.specs.models import MonaiUNetSpec
    from voxray.training.models import build_model

    return build_model(MonaiUNetSpec(channels=list(channels), num_res_units=1), in_channels=4, out_channels=3,
                       spatial_dims=3, patch=[32, 32, 32])


def loader_overhead(store_uri: str, steps: int, augment: bool) -> dict:
    """Step time fed by PatchBatches (2 threads) over step time on 4 batches cycled from memory.

    The model is a mid-sized 3D UNet (a realistic step, ~0.3-1 s here): with a toy model the ratio only measures
    how much CPU the augmentations take from a 2-core machine.
    """
    from voxray.platform.specs.train import AugmentSpec, LossSpec, ScheduleSpec
    from voxray.preprocessing.store import Store
    from voxray.training.data import PatchBatches
    from voxray.training.loop import train_step
    from voxray.training.losses import build_loss
    from voxray.training.schedules import build_scheduler

    store = Store.open(store_uri)
    loader = PatchBatches(store, store.case_ids(), patch=[32, 32, 32], batch_size=2, task="brats_regions",
                          meta=store.metadata(), augment=AugmentSpec(enabled=augment), workers=2, prefetch=4)
    memory = [next(loader) for _ in range(4)]
    model, loss = _model((32, 64, 128, 256)), build_loss(LossSpec(), "brats_regions")
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    sched = build_scheduler(opt, ScheduleSpec(name="constant"), steps * 10)
    cpu = torch.device("cpu")

    def cycle():
        while True:
            yield from memory

    sources = {"memory": cycle(), "loader": loader}
    times = {"memory": [], "loader": []}
    for _ in range(steps):  # interleaved, so load changes on the shared machine hit both alike
        for name, src in sources.items():
            t0 = time.perf_counter()
            train_step(model, [next(src)], loss, opt, sched, device=cpu)
            times[name].append(time.perf_counter() - t0)
    loader.close()
    med = {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}
    tag = "" if augment else "_noaug"
    return {f"step_s_memory{tag}": med["memory"], f"step_s_loader{tag}": med["loader"],
            f"loader_overhead{tag}": med["loader"] / med["memory"]}


def ingest_compare(store_uri: str, batches: int) -> dict:
    """Loader only (no model): the direct threaded zarr loader vs a Ray Data pipeline doing the same work
    (patch requests as rows → map(read + augment + encode) → iter_torch_batches), as `get_dataset_shard` would."""
    import ray

    from voxray.platform.specs.train import AugmentSpec
    from voxray.preprocessing.store import Store
    from voxray.training.augment import Augmenter
    from voxray.training.data import PatchBatches
    from voxray.training.sampler import PatchSampler, read_patch
    from voxray.training.tasks import encode_target

    store = Store.open(store_uri)
    meta = store.metadata()
    direct = PatchBatches(store, store.case_ids(), patch=[32, 32, 32], batch_size=2, task="brats_regions",
                          meta=meta, augment=AugmentSpec(), workers=2, prefetch=4)
    next(direct)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(direct)
    t_direct = time.perf_counter() - t0
    direct.close()

    sampler = PatchSampler(store, store.case_ids(), [32, 32, 32], fg_fraction=0.33, seed=1)
    rows = [{"case_id": r.case_id, "start": list(r.start), "seed": r.seed}
            for r in (sampler.draw() for _ in range(2 * batches))]

    def sample(row: dict) -> dict:
        from voxray.training.sampler import PatchRequest

        st = Store.open(store_uri)
        req = PatchRequest(row["case_id"], tuple(row["start"]), int(row["seed"]))
        image, label = read_patch(st, req, (32, 32, 32))
        img, lab = Augmenter(AugmentSpec(), 3)(image, label, req.seed)
        return {"image": img.numpy(), "target": encode_target(lab, "brats_regions", meta).numpy()}

    def run_ray() -> float:
        t0 = time.perf_counter()
        for _ in ray.data.from_items(rows).map(sample).iter_torch_batches(batch_size=2):
            pass
        return time.perf_counter() - t0

    cold = run_ray()  # worker processes start and import torch/MONAI
    warm = run_ray()
    return {"ingest_s_direct": t_direct, "ingest_s_ray_data_cold": cold, "ingest_s_ray_data": warm,
            "ray_data_vs_direct": warm / t_direct}


def ddp_speedup(store_uri: str, tmp: Path, steps: int) -> dict:
    from voxray.platform.specs.loader import validate_job
    from voxray.training.trainer import build_trainer

    out = {}
    for workers in (1, 2):  # Ray is started by main()
        spec = {"store": store_uri, "task": "brats_regions",
                "model": {"name": "unet", "channels": [16, 32, 64], "num_res_units": 1}, "patch": [32, 32, 32],
                "batch_size": 2, "steps": steps, "validation": {"every": 10**6, "folds": 2, "max_cases": 1},
                "checkpoint": {"every": 10**6}, "scaling": {"num_workers": workers, "cpus_per_worker": 1},
                "sampling": {"loader_workers": 1}, "tracking": {"mlflow": False}}
        job = validate_job({"kind": "train", "name": f"ddp{workers}", "train": spec}, base_dir=tmp)
        run_dir = tmp / f"ddp{workers}"
        t0 = time.perf_counter()
        build_trainer(job, run_dir=run_dir).fit()
        out[f"fit_s_{workers}w"] = time.perf_counter() - t0
        # steady-state rate from the loop itself (excludes worker start-up, which dominates short runs)
        its = json.loads((run_dir / "progress.json").read_text())["it_s"]
        out[f"samples_s_{workers}w"] = its * workers * 2
    out["ddp_speedup_2w"] = out["samples_s_2w"] / out["samples_s_1w"]
    return out


def sw_vs_monai(shape: tuple[int, int, int], repeats: int) -> dict:
    from monai.inferers import sliding_window_inference

    from voxray.training.inference import sliding_window_predict

    model = _model().eval()
    image = torch.randn(4, *shape)

    def ours():
        return sliding_window_predict(model, image, [32, 32, 32], 0.5, mode="gaussian", device="cpu")

    def monai():
        with torch.no_grad():
            return sliding_window_inference(image[None], [32, 32, 32], 1, model, overlap=0.5, mode="gaussian")

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    timed(ours), timed(monai)  # warm-up
    pairs = []
    for i in range(repeats):  # back to back, alternating order: load swings hit both alike
        if i % 2:
            m = timed(monai)
            pairs.append((timed(ours), m))
        else:
            pairs.append((timed(ours), timed(monai)))
    ratios = sorted(o / m for o, m in pairs)
    return {"sw_s_ours": sorted(o for o, _ in pairs)[repeats // 2], "sw_s_monai": sorted(m for _, m in pairs)[repeats // 2],
            "sw_vs_monai": ratios[repeats // 2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI-sized run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    q = args.quick
    results: dict = {"quick": q, "cpus": torch.get_num_threads()}
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec

    with tempfile.TemporaryDirectory(prefix="voxray-bench-train-") as d, \
            ray_runtime(RaySpec(num_cpus=2, dashboard=False)):
        tmp = Path(d)
        store = build_store(tmp, cases=4 if q else 6, shape=(48, 48, 40) if q else (80, 80, 64))
        results.update(loader_overhead(store, steps=6 if q else 20, augment=True))
        results.update(loader_overhead(store, steps=6 if q else 20, augment=False))
        results.update(sw_vs_monai((48, 48, 48) if q else (64, 64, 64), repeats=5 if q else 7))
        results.update(ingest_compare(store, batches=10 if q else 30))
        results.update(ddp_speedup(store, tmp, steps=6 if q else 30))
    results["load_avg_1m"] = os.getloadavg()[0]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "train.json").write_text(json.dumps(results, indent=1))
    for k, v in results.items():
        print(f"{k:<22} {v:.4g}" if isinstance(v, float) else f"{k:<22} {v}")


if __name__ == "__main__":
    main()

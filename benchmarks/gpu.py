"""GPU benchmark → benchmarks/results/gpu.json (the test suite never needs a GPU; this script is run by hand on one).

- step: the Factorizer recipe's training step (Swin Factorizer widths 32-512, window 8, deep supervision, 128³ patch,
  batch 1, AdamW, bf16 autocast): seconds per step and peak GPU memory (paper: 16.6 GB at 128³).
- inference: a full BraTS-size volume (240×240×155, 4 channels) through `Predictor` end to end (decode, preprocess,
  128³ sliding windows at the card's overlap, bf16, invert, mask): seconds and windows/s.
- loader: does the real loader (PatchBatches, recipe augmentation, 128³, `--loader-workers` threads) keep up with the
  GPU? Its batches/s ÷ the steps/s of the GPU step (≥ 1 = it keeps up), and the step fed by the loader ÷ the step on
  in-memory batches, paired per round.
- ddp: samples/s over every GPU present (torch.multiprocessing spawn + NCCL, no torchrun) ÷ one GPU.

Every timing runs in interleaved rounds with medians and spreads (benchmarks/_timing.py). On a machine without CUDA
it says so and exits 0 without writing anything. `--cpu-smoke` runs every section on the CPU with tiny sizes (gloo
for DDP) to check the script itself; its results go to --out, never to results/gpu.json.

    python benchmarks/gpu.py [--repeats N] [--loader-workers 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import Results, Stat, add_arguments, interleave, paired  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.json"
RECIPE = {"name": "swin_factorizer", "widths": [32, 64, 128, 256, 512], "window": 8, "mlp_ratio": 2,
          "deep_supervision": True}
TINY = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4, "mlp_ratio": 2,
        "deep_supervision": True}
AUGMENT = {"flip": 0.5, "affine": 0.15, "intensity": 0.15}
NO_CUDA = ("benchmarks/gpu.py: no CUDA device here (torch.cuda.is_available() is False): nothing measured, no "
           "results written. Run it on a machine with a GPU (or --cpu-smoke to check the script on the CPU).")


class Setup:
    """Sizes and device of a run: the recipe on CUDA, or tiny sizes on the CPU (--cpu-smoke)."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke else "cuda")
        self.model = TINY if smoke else RECIPE
        self.patch = [32, 32, 32] if smoke else [128, 128, 128]
        self.volume = (64, 64, 48) if smoke else (240, 240, 155)
        self.precision = "fp32" if smoke else "bf16"
        self.backend = "gloo" if smoke else "nccl"

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def build(setup: Setup) -> torch.nn.Module:
    from pydantic import TypeAdapter

    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import build_model

    torch.manual_seed(0)
    spec = TypeAdapter(ModelSpec).validate_python(setup.model)
    return build_model(spec, in_channels=4, out_channels=3, spatial_dims=3, patch=setup.patch).to(setup.device)


def _stepper(setup: Setup, model: torch.nn.Module) -> Any:
    from voxray.platform.specs.train import LossSpec, ScheduleSpec
    from voxray.training.loop import train_step
    from voxray.training.losses import build_loss
    from voxray.training.schedules import build_scheduler

    loss = build_loss(LossSpec(), "brats_regions")
    opt = torch.optim.AdamW(model.parameters(), 1e-4, weight_decay=0.01)
    sched = build_scheduler(opt, ScheduleSpec(name="constant"), 10**6)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        train_step(model, [batch], loss, opt, sched, device=setup.device, precision=setup.precision)
        setup.sync()

    return step


def _batch(setup: Setup) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 4, *setup.patch, generator=g), (torch.rand(1, 3, *setup.patch, generator=g) > 0.9).float()


def step_time(setup: Setup, repeats: int, res: Results) -> float:
    """Seconds per training step on the device and its peak memory; returns the median step time."""
    model = build(setup)
    step = _stepper(setup, model)
    batch = _batch(setup)
    if setup.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rounds = interleave({"step": lambda: step(batch)}, repeats, warmup=2)
    res.rounds(rounds)
    if setup.device.type == "cuda":
        res.value("step_peak_memory_gib", round(torch.cuda.max_memory_allocated() / 2**30, 2))
        res.value("step_peak_reserved_gib", round(torch.cuda.max_memory_reserved() / 2**30, 2))
    return res.stat("step_s", rounds.wall["step"])


def inference(setup: Setup, repeats: int, res: Results, tmp: Path) -> None:
    """A full volume through the predictor, end to end, at the recipe's window."""
    import nibabel as nib
    import numpy as np

    from voxray.preprocessing.transforms import TransformConfig
    from voxray.training.predict import Predictor, predict_images
    from voxray.training.registry import export_model

    card = {"model": setup.model, "spatial_dims": 3, "patch": setup.patch, "in_channels": 4,
            "channels": ["FLAIR", "T1w", "t1gd", "T2w"], "out_channels": 3, "task": "brats_regions",
            "labels": {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
            "label_encoding": "index", "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]},
            "preprocess": TransformConfig().to_dict(), "restrict_to_nonzero": True, "metrics": {},
            "source": {"benchmark": "gpu"}}
    path = export_model(build(setup).cpu(), card, tmp / "registry", "gpu")
    grid = np.meshgrid(*[(np.arange(n) - n / 2) / n for n in setup.volume], indexing="ij", sparse=True)
    inside = (grid[0] / 0.29) ** 2 + (grid[1] / 0.35) ** 2 + (grid[2] / 0.42) ** 2 < 1
    data = np.zeros((*setup.volume, 4), np.int16)
    rng = np.random.default_rng(0)
    for c in range(4):
        data[..., c][inside] = rng.normal(400 + 100 * c, 60, int(inside.sum()))
    nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])).to_filename(str(tmp / "case.nii.gz"))
    predictor = Predictor.from_registry(path, device=str(setup.device), precision=setup.precision)
    windows = [0]

    def once() -> None:
        predict_images(predictor, tmp / "case.nii.gz", progress=lambda d, t: windows.__setitem__(0, t))
        setup.sync()

    rounds = interleave({"predict": once}, repeats)
    res.rounds(rounds)
    res.value("inference_windows", windows[0])
    res.value("inference_settings", predictor.settings.describe())
    res.stat("inference_s", rounds.wall["predict"])
    res.stat("inference_windows_per_s", Stat([windows[0] / v for v in rounds.wall["predict"].samples], "windows/s"))


def loader(setup: Setup, repeats: int, workers: int, step_s: float, res: Results, tmp: Path) -> None:
    """The real loader's batches/s against the GPU's steps/s, and the step fed by it ÷ the step from memory."""
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec
    from voxray.platform.specs.loader import validate_job
    from voxray.platform.specs.train import AugmentSpec
    from voxray.preprocessing.runner import run_preprocess
    from voxray.preprocessing.store import Store
    from voxray.preprocessing.synth import synth_dataset
    from voxray.training.data import PatchBatches

    synth_dataset("msd_brats", tmp / "raw", cases=3, seed=0, shape=setup.volume)
    job = validate_job({"kind": "preprocess", "name": "gpu", "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(tmp / "raw")}, "store": str(tmp / "s.zarr")}}, base_dir=tmp)
    with ray_runtime(RaySpec(num_cpus=min(8, os.cpu_count() or 1), dashboard=False)):
        run_preprocess(job)
    store = Store.open(str(tmp / "s.zarr"))
    batches = PatchBatches(store, store.case_ids(), patch=setup.patch, batch_size=1, task="brats_regions",
                           meta=store.metadata(), augment=AugmentSpec(**AUGMENT), workers=workers, prefetch=2 * workers,
                           fg_fraction=0.0)
    n = 4 * workers

    def drain() -> None:
        for _ in range(n):
            next(batches)

    rounds = interleave({"loader": drain}, repeats)
    rate = Stat([n / v for v in rounds.wall["loader"].samples], "batches/s")
    res.stat("loader_batches_per_s", rate)
    res.value("loader_keeps_up", round(rate.median * step_s, 3))
    model = build(setup)
    step = _stepper(setup, model)
    memory = [next(batches) for _ in range(4)]
    steps = 4
    k = {"i": 0}

    def from_memory() -> None:
        for _ in range(steps):
            k["i"] += 1
            step(memory[k["i"] % 4])

    def from_loader() -> None:
        for _ in range(steps):
            step(next(batches))

    rounds = interleave({"memory": from_memory, "loader": from_loader}, repeats)
    batches.close()
    res.rounds(rounds)
    res.stat("loader_overhead_gpu", paired(rounds.wall["loader"], rounds.wall["memory"]), gate=True)
    res.value("loader_workers", workers)


def _ddp_worker(rank: int, world: int, port: int, smoke: bool, steps: int, out: Any) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    setup = Setup(smoke)
    if setup.device.type == "cuda":
        torch.cuda.set_device(rank)
        setup.device = torch.device("cuda", rank)
    dist.init_process_group(setup.backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = build(setup)
        ddp = DistributedDataParallel(model, device_ids=[rank] if setup.device.type == "cuda" else None)
        step = _stepper(setup, ddp)
        batch = _batch(setup)
        times = []
        for _ in range(steps + 2):
            dist.barrier()
            t = time.perf_counter()
            step(batch)
            times.append(time.perf_counter() - t)
        if rank == 0:
            out.put(times[2:])
    finally:
        dist.destroy_process_group()


def ddp(setup: Setup, steps: int, res: Results) -> None:
    """Samples/s with DDP over every GPU present (spawned processes, NCCL) ÷ one GPU."""
    import torch.multiprocessing as mp

    gpus = 2 if setup.smoke else torch.cuda.device_count()
    res.value("ddp_gpus", gpus)
    ctx = mp.get_context("spawn")
    rates = {}
    for world in sorted({1, gpus}):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        queue = ctx.SimpleQueue()
        mp.spawn(_ddp_worker, args=(world, port, setup.smoke, steps, queue), nprocs=world, join=True)
        step = Stat(queue.get())
        res.stat(f"ddp_step_s_{world}gpu", step)
        rates[world] = world / step.median
        res.value(f"ddp_samples_per_s_{world}gpu", round(rates[world], 3))
    if gpus > 1:
        res.value("ddp_speedup", round(rates[gpus] / rates[1], 3))
        res.value("ddp_efficiency", round(rates[gpus] / rates[1] / gpus, 3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--loader-workers", type=int, default=4, help="loader threads (the recipe's 4)")
    parser.add_argument("--ddp-steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    add_arguments(parser)
    args = parser.parse_args()
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 0
    if args.cpu_smoke and args.out is None:
        parser.error("--cpu-smoke needs --out (smoke figures never go to results/gpu.json)")
    setup = Setup(args.cpu_smoke)
    res = Results("gpu", max_spread=args.max_spread, out=args.out or RESULTS)
    res.value("device", "cpu (smoke)" if setup.smoke else torch.cuda.get_device_name(0))
    res.value("setup", {"model": setup.model, "patch": setup.patch, "batch_size": 1, "precision": setup.precision,
                        "volume": list(setup.volume), "augment": AUGMENT, "torch": torch.__version__})
    with tempfile.TemporaryDirectory(prefix="voxray-bench-gpu-") as d:
        tmp = Path(d)
        step_s = step_time(setup, args.repeats, res)
        inference(setup, args.repeats, res, tmp)
        loader(setup, args.repeats, args.loader_workers, step_s, res, tmp)
        ddp(setup, args.ddp_steps, res)
    for k, v in res.data.items():
        print(f"{k:<32} {v}")
    return res.write()


if __name__ == "__main__":
    sys.exit(main())

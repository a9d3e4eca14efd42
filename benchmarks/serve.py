"""Serving benchmark on loopback with a real model → benchmarks/results/serve.json (interleaved rounds, _timing.py).

Model: the demo Swin Factorizer (widths 8-16-32-64, window 4, head_dim 4, mlp_ratio 2, 32³ windows; untrained —
speed does not depend on the weights); one replica, 1 CPU, 1 torch thread.

- http_overhead: POST /v1/predict of a BraTS-size 4-channel volume (240×240×155 int16, 4 gzipped modalities up,
  gzipped mask down) ÷ the same work in-process (decode the same files, predict, encode the mask) on the same thread
  count, paired per round (goal ≤ 1.2).
- batching_gain: requests/s of 4 concurrent clients sending volumes of 4 different shapes to a replica with
  `max_batch_size: 4` (their windows share forward passes, training/windows.py) ÷ one with `max_batch_size: 1`,
  paired per round (goal ≥ 1.5 on CPU). Beside it, the measured reason it can or cannot be met: the network's
  windows/s at 16 windows per pass ÷ at 4 (`forward_16_vs_4`; on the CPU requests share passes of the card's 4
  windows because a bigger pass is slower per window, so batching can only fill partial passes there).
- latency under a fixed-rate load (open loop at half the batched throughput): p50, p99, errors (goal = 0), and the
  replica's peak RSS during that load (psutil on the replica's PID, which its stats method reports, sampled every
  50 ms) beside its RSS just before it.

Run: `python benchmarks/serve.py [--quick] [--repeats N]` (full: ~20-30 min on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os

# the replica runs under Ray, which sets OMP_NUM_THREADS to its num_cpus (1): the in-process side gets the same
# (before numpy loads its thread pools), so both run the same thread counts
os.environ.setdefault("OMP_NUM_THREADS", "1")
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _demo_model import CHANNELS, MODEL, make_model  # noqa: E402
from _timing import Results, Stat, add_arguments, interleave, paired  # noqa: E402

log = logging.getLogger("bench.serve")
FULL = (240, 240, 155)
MIXED = [(112, 128, 96), (128, 104, 88), (96, 120, 104), (120, 112, 80)]
KEY_ENV = "VOXRAY_BENCH_KEY"


def make_inputs(folder: Path, shape: tuple[int, int, int], seed: int) -> dict[str, Path]:
    """Per-modality int16 NIfTI files: a noisy ellipsoid head (semi-axes ~30-42 % of the grid) on zeros."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    grid = np.meshgrid(*[(np.arange(n) - n / 2) / n for n in shape], indexing="ij", sparse=True)
    inside = (grid[0] / 0.3) ** 2 + (grid[1] / 0.36) ** 2 + (grid[2] / 0.42) ** 2 < 1
    rng = np.random.default_rng(seed)
    out = {}
    for i, name in enumerate(CHANNELS):
        data = np.zeros(shape, np.int16)
        data[inside] = rng.normal(400 + 100 * i, 60, int(inside.sum()))
        out[name] = folder / f"{name}.nii.gz"
        nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])).to_filename(str(out[name]))
    return out


def in_process(model: Path) -> Callable[[dict[str, Path]], None]:
    """The server's work without HTTP: decode the files, predict, encode the gzipped mask."""
    from voxray.training.predict import Predictor, predict_images
    from voxray.training.predict_io import mask_image

    predictor = Predictor.from_registry(model, device="cpu")

    def once(files: dict[str, Path]) -> None:
        prediction, like = predict_images(predictor, files)
        img = mask_image(prediction.mask, like)
        gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)  # as serving/service.py

    return once


def post(http: Any, files: dict[str, bytes]) -> None:
    r = http.post("/v1/predict", files=[(n, (f"{n}.nii.gz", b, "application/gzip")) for n, b in files.items()])
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    gzip.decompress(r.content)


def deploy(model: Path, port: int, max_batch_size: int, prefix: str, app: str) -> str:
    from voxray.platform.specs.serve import ServeSpec
    from voxray.serving.runner import start_serving

    spec = ServeSpec(model=str(model), port=port, api_key_env=KEY_ENV, max_batch_size=max_batch_size,
                     max_ongoing_requests=16, batch_wait_timeout_s=0.2, num_cpus=1, blocking=False,
                     route_prefix=prefix)
    return start_serving(spec, app)


def throughput(factory: Callable[[], Any], bodies: list[dict[str, bytes]], clients: int) -> float:
    """Requests/s of `clients` closed-loop clients sharing `bodies` (client i sends bodies i, i + clients, …)."""
    def worker(i: int) -> None:
        with factory() as http:
            for body in bodies[i::clients]:
                post(http, body)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return len(bodies) / (time.perf_counter() - t0)


def fixed_rate(factory: Callable[[], Any], bodies: list[dict[str, bytes]], n: int, rate: float) -> dict:
    """Open-loop load: request i starts at i / rate; latency counts from its scheduled start."""
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal errors
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        try:
            with factory() as http:
                post(http, bodies[i % len(bodies)])
            with lock:
                latencies.append(time.perf_counter() - (start + i / rate))
        except Exception:  # any failure counts; the figure must be 0
            with lock:
                errors += 1

    with ThreadPoolExecutor(min(n, 32)) as pool:
        list(pool.map(one, range(n)))
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {"requests": n, "rate_rps": round(rate, 3), "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1), "errors": errors}


class RssSampler:
    """Peak resident memory of one process (the replica) while the `with` block runs, sampled every `every_s`."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every_s = every_s
        self.before_mb = self.peak_mb = self.proc.memory_info().rss / 2**20
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_mb = max(self.peak_mb, self.proc.memory_info().rss / 2**20)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def forward_rates(model_path: Path, sizes: tuple[int, ...], repeats: int) -> dict[int, Stat]:
    """The network's windows/s at each forward batch size on one thread (interleaved rounds)."""
    import torch

    from voxray.training.registry import load_model

    model, _ = load_model(model_path, "cpu")
    model.eval()
    xs = {b: torch.randn(b, 4, 32, 32, 32) for b in sizes}

    def run(b: int) -> Callable[[], None]:
        def go() -> None:
            with torch.no_grad():
                for _ in range(max(1, 16 // b)):
                    model(xs[b])
        return go

    rounds = interleave({str(b): run(b) for b in sizes}, repeats)
    return {b: Stat([max(1, 16 // b) * b / v for v in rounds.wall[str(b)].samples], unit="windows/s") for b in sizes}


def run(args: argparse.Namespace, res: Results) -> None:
    import httpx
    import ray
    import torch
    from ray import serve

    torch.set_num_threads(1)  # the replica's thread count (num_cpus 1)
    full = (96, 96, 72) if args.quick else FULL
    mixed = [tuple(max(32, s // 2) for s in m) for m in MIXED] if args.quick else MIXED
    os.environ[KEY_ENV] = os.environ.get(KEY_ENV) or "bench-key-" + os.urandom(8).hex()
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    root = Path(tempfile.mkdtemp(prefix="voxray-bench-serve-"))
    model = make_model(root, "bench", benchmark="serve")
    big = make_inputs(root / "big", full, 0)
    small = [make_inputs(root / f"mixed{i}", s, i + 1) for i, s in enumerate(mixed)]
    body = lambda files: {n: p.read_bytes() for n, p in files.items()}  # noqa: E731
    big_body, small_bodies = body(big), [body(f) for f in small]
    local = in_process(model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        url_b = deploy(model, port, 4, "/batched", "batched")
        url_s = deploy(model, port, 1, "/single", "single")
        mk = lambda url: (lambda: httpx.Client(base_url=url, headers=headers, timeout=600))  # noqa: E731
        with mk(url_b)() as http, mk(url_s)() as warm:
            warm_rounds = interleave({"http": lambda: post(http, big_body), "in_process": lambda: local(big)},
                                     args.repeats, log=log.info)
            for b in small_bodies:
                post(warm, b)
        res.rounds(warm_rounds)
        res.stat("http_s", warm_rounds.wall["http"])
        res.stat("in_process_s", warm_rounds.wall["in_process"])
        res.stat("http_overhead", paired(warm_rounds.wall["http"], warm_rounds.wall["in_process"]), gate=True)
        bodies = small_bodies * 2
        tput = interleave({"batched": lambda: throughput(mk(url_b), bodies, len(small_bodies)),
                           "single": lambda: throughput(mk(url_s), bodies, len(small_bodies))},
                          args.repeats, log=log.info)
        res.rounds(tput)
        res.stat("throughput_rps_batched", Stat([len(bodies) / v for v in tput.wall["batched"].samples], "rps"))
        res.stat("throughput_rps_single", Stat([len(bodies) / v for v in tput.wall["single"].samples], "rps"))
        res.stat("batching_gain", paired(tput.wall["single"], tput.wall["batched"]), gate=True)
        stats = serve.get_deployment_handle("voxray-model", app_name="batched").stats.remote().result()
        res.value("batch_stats", {k: stats[k] for k in ("batches", "max_batch", "mean_batch")})
        rate = 0.5 * res.data["throughput_rps_batched"]
        with RssSampler(stats["pid"]) as rss:  # the replica runs on this machine (embedded Ray)
            load = fixed_rate(mk(url_b), small_bodies, 8 if args.quick else 20, rate)
        res.value("replica_rss_mb", {"before_load": round(rss.before_mb, 1),
                                     "peak_during_load": round(rss.peak_mb, 1)})
        res.value("replica_peak_rss_mb", round(rss.peak_mb, 1))
        res.value("latency", load)
        res.value("errors", load["errors"])
        res.value("p50_ms", load["p50_ms"])
        res.value("p99_ms", load["p99_ms"])
    finally:
        serve.shutdown()
        ray.shutdown()
    rates = forward_rates(model, (4, 16), args.repeats)
    for b, st in rates.items():
        res.stat(f"forward_windows_per_s_batch{b}", st, digits=2)
    res.value("forward_16_vs_4", round(rates[16].median / rates[4].median, 3))
    res.value("setup", {"volume": [4, *full], "mixed_shapes": [list(m) for m in mixed], "model": MODEL,
                        "window": [32, 32, 32], "replica": "1 CPU, 1 torch thread, max_ongoing_requests 16, "
                        "batch_wait 0.2 s; batched app max_batch_size 4, single app 1", "clients": len(mixed),
                        "quick": args.quick})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small volumes (CI-sized)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve.json")
    add_arguments(parser)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    res = Results("serve", max_spread=args.max_spread, out=args.out)
    run(args, res)
    d = res.data
    for key in ("http_overhead", "http_s", "in_process_s", "batching_gain", "throughput_rps_batched",
                "throughput_rps_single", "forward_windows_per_s_batch4", "forward_windows_per_s_batch16",
                "forward_16_vs_4", "errors", "p50_ms", "p99_ms", "replica_rss_mb", "batch_stats"):
        print(f"{key:<32} {d.get(key)}")
    return res.write()


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark on loopback (bounded request count and time) → benchmarks/results/serve.json.

- http_overhead: median end-to-end POST /v1/predict (4 gzipped modalities up, mask down) ÷ median in-process
  `Predictor.predict` of the same volume with the same torch thread count as the replica (target ≤ 1.2).
- batching_gain: throughput of 8 concurrent clients with `max_batch_size: 8` ÷ the same with `max_batch_size: 1`
  (target ≥ 1.5).
- latency under a fixed-rate load of N requests (open loop at ~half the batched throughput): p50, p99, errors (= 0).

The model is a small MONAI UNet (random weights: speed does not depend on them) with 16³ windows on a
4-channel 56×56×48 volume, i.e. many small windows per request as in patch-based 3D models.
Run: `python benchmarks/serve.py [--quick]`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "serve.json"
CHANNELS = ["flair", "t1w", "t1gd", "t2w"]
SHAPE = (56, 56, 48)
KEY_ENV = "VOXRAY_BENCH_KEY"


def make_model(root: Path) -> Path:
    import torch

    from voxray.preprocessing.transforms import TransformConfig
    from voxray.training.registry import build_from_card, export_model

    card = {"model": {"name": "unet", "channels": [8, 16], "num_res_units": 1}, "spatial_dims": 3,
            "patch": [16, 16, 16], "in_channels": 4, "channels": CHANNELS, "out_channels": 3,
            "task": "brats_regions", "labels": {0: "background", 1: "edema", 2: "non-enhancing", 3: "enhancing"},
            "label_encoding": "index", "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]},
            "preprocess": TransformConfig().to_dict(), "metrics": {}, "source": {"benchmark": "serve"}}
    torch.manual_seed(0)
    return export_model(build_from_card(card), card, root / "registry", "bench")


def make_inputs(root: Path) -> dict[str, bytes]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    out = {}
    for i, name in enumerate(CHANNELS):
        data = np.zeros(SHAPE, np.int16)
        data[4:-4, 4:-4, 3:-3] = rng.normal(300 + 50 * i, 40, (SHAPE[0] - 8, SHAPE[1] - 8, SHAPE[2] - 6))
        img = nib.Nifti1Image(data, affine)
        img.to_filename(str(root / f"{name}.nii.gz"))
        out[name] = (root / f"{name}.nii.gz").read_bytes()
    return out


def in_process_predictor(model: Path, root: Path, threads: int):
    """(predict-once callable, volume) for the same registry model and files, on `threads` torch threads."""
    import torch

    from voxray.training.predict import Predictor, load_images, volume_from_images

    torch.set_num_threads(threads)
    predictor = Predictor.from_registry(model)
    volume = volume_from_images(load_images({c: root / f"{c}.nii.gz" for c in CHANNELS}), CHANNELS)
    predictor.predict(volume)

    def once() -> float:
        t0 = time.perf_counter()
        predictor.predict(volume)
        return time.perf_counter() - t0

    return once


def deploy(model: Path, port: int, max_batch_size: int) -> str:
    from voxray.platform.specs.serve import ServeSpec
    from voxray.serving.runner import start_serving

    spec = ServeSpec(model=str(model), port=port, api_key_env=KEY_ENV, max_batch_size=max_batch_size,
                     max_ongoing_requests=16, batch_wait_timeout_s=0.05, num_cpus=1, blocking=False)
    url = start_serving(spec, "bench")
    return url


def post(http, files: dict[str, bytes]) -> float:
    t0 = time.perf_counter()
    r = http.post("/v1/predict", files=[(n, (f"{n}.nii.gz", b, "application/gzip")) for n, b in files.items()])
    if r.status_code != 200:
        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
    gzip.decompress(r.content)
    return time.perf_counter() - t0


def throughput(client_factory, files, n_requests: int, concurrency: int) -> float:
    """Requests per second with `concurrency` closed-loop clients sharing `n_requests`."""
    counter = iter(range(n_requests))
    lock = threading.Lock()

    def worker(_: int) -> None:
        with client_factory() as http:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                post(http, files)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return n_requests / (time.perf_counter() - t0)


def fixed_rate(client_factory, files, n_requests: int, rate: float) -> dict:
    """Open-loop load: request i starts at i / rate; latency counts from its scheduled start."""
    start = time.perf_counter() + 0.2
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(i: int) -> None:
        nonlocal errors
        time.sleep(max(0.0, start + i / rate - time.perf_counter()))
        try:
            with client_factory() as http:
                post(http, files)
            with lock:
                latencies.append(time.perf_counter() - (start + i / rate))
        except Exception:  # any failure counts; the figure must be 0
            with lock:
                errors += 1

    with ThreadPoolExecutor(min(n_requests, 32)) as pool:
        list(pool.map(one, range(n_requests)))
    lat = np.asarray(latencies) if latencies else np.asarray([float("nan")])
    return {"requests": n_requests, "rate_rps": round(rate, 3), "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 1),
            "p99_ms": round(float(np.percentile(lat, 99)) * 1e3, 1), "errors": errors}


def run(quick: bool) -> dict:
    import httpx
    import ray
    from ray import serve

    repeats, n_tput, n_load = (5, 16, 20) if quick else (10, 32, 60)
    os.environ[KEY_ENV] = os.environ.get(KEY_ENV) or "bench-key-" + os.urandom(8).hex()
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    root = Path(tempfile.mkdtemp(prefix="voxray-bench-serve-"))
    model, files = make_model(root), make_inputs(root)
    in_process = in_process_predictor(model, root, threads=1)
    load_before = os.getloadavg()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        url = deploy(model, port, max_batch_size=8)

        def factory():
            return httpx.Client(base_url=url, headers=headers, timeout=120)

        with factory() as http:  # alternate in-process and HTTP runs so machine load drifts hit both alike
            post(http, files)
            pairs = [(in_process(), post(http, files)) for _ in range(repeats)]
        inproc = statistics.median(p[0] for p in pairs)
        single = statistics.median(p[1] for p in pairs)
        rps_batched = throughput(factory, files, n_tput, 8)
        handle = serve.get_deployment_handle("voxray-model", app_name="bench")
        stats = handle.stats.remote().result()
        load = fixed_rate(factory, files, n_load, rate=0.5 * rps_batched)
        deploy(model, port, max_batch_size=1)
        with factory() as http:
            post(http, files)
        rps_single = throughput(factory, files, n_tput, 8)
    finally:
        serve.shutdown()
        ray.shutdown()
    return {
        "http_overhead": round(single / inproc, 3), "batching_gain": round(rps_batched / rps_single, 3),
        "errors": load["errors"], "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"], "load": load,
        "in_process_ms": round(inproc * 1e3, 1), "http_single_ms": round(single * 1e3, 1),
        "throughput_rps": {"batched_8": round(rps_batched, 3), "batch_1": round(rps_single, 3)},
        "batch_stats": {k: stats[k] for k in ("batches", "max_batch", "mean_batch")},
        "setup": {"volume": [4, *SHAPE], "model": "MONAI UNet [8, 16], 16³ windows, overlap 0.25",
                  "replica": "1 CPU, 1 torch thread, max_ongoing_requests 16, batch_wait 50 ms",
                  "clients": 8, "quick": quick, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "python": sys.version.split()[0],
                  "load_average_1m": [round(load_before[0], 1), round(os.getloadavg()[0], 1)]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (CI-sized, ~2 min)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    result = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key in ("http_overhead", "batching_gain", "errors", "p50_ms", "p99_ms", "in_process_ms", "http_single_ms"):
        print(f"{key:<16} {result[key]}")
    print(f"throughput       {result['throughput_rps']}  batches {result['batch_stats']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

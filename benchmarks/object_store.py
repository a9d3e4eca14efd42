"""Object-store benchmark: conversion and training-read throughput on a real S3 server vs the local disk, one run.

The S3 server is SeaweedFS on loopback (the same `weed` the tests start, tests/_s3server.py, auth on), so the figures
isolate what the S3 protocol and voxray's object-store paths cost (signing, HTTP, one object per chunk, listings),
not a network: a real bucket adds its round-trip latency per request (few ms in-region), which the read figures'
`chunks_per_patch` lets you add back.

- convert: the same synthetic MSD-BraTS cases converted on Ray Data (2 CPUs) local dataset → local store,
  local dataset → s3:// store, and s3:// dataset → s3:// store; wall seconds and CPU-seconds (every Ray process,
  not the S3 server) per case, interleaved in rounds (each round a fresh store).
- read: random training patches (image + label, float32, fg-oversampled, `training.sampler.read_patch`) from the
  local store and the s3:// store (64³ chunks, and 32³ chunks to show what more, smaller requests cost); wall and
  CPU ms per patch, MB/s and chunks fetched per patch (= GET requests on S3). The gated headline is the CPU-time
  ratio S3 ÷ local (the S3 client's threads included), which a shared machine's load disturbs least.
- sizes: store bytes and objects per case, source bytes per case (inputs of docs/cluster.md's estimate).

    .venv/bin/python benchmarks/object_store.py            # 4 BraTS-size (240×240×155) cases
    .venv/bin/python benchmarks/object_store.py --quick    # 2 small cases, a smoke run
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from _timing import Measured, Results, Stat, add_arguments, interleave, paired, tree_cpu_seconds  # noqa: E402
from _s3server import S3Server  # noqa: E402

log = logging.getLogger("bench.object_store")


def _job(root: str, store: str, chunk: int) -> Any:
    from voxray.platform.specs.loader import validate_job

    return validate_job({"kind": "preprocess", "name": "bench-s3", "preprocess": {
        "dataset": {"layout": "msd_brats", "root": root}, "store": store, "spacing": [1.0, 1.0, 1.0],
        "chunk": [chunk] * 3, "memory_per_case_mb": 1024}})


def _convert(root: str, store: str, chunk: int, server_pid: int) -> Measured:
    """One conversion on the running Ray; CPU of every process in this tree except the S3 server's."""
    from voxray.preprocessing.runner import run_preprocess

    cpu0 = tree_cpu_seconds() - tree_cpu_seconds(server_pid)
    t0 = time.perf_counter()
    res = run_preprocess(_job(root, store, chunk))
    wall = time.perf_counter() - t0
    assert res.ok and res.summary["cases_converted"] == res.summary["cases_ok"], res.summary
    return Measured(wall=wall, cpu=tree_cpu_seconds() - tree_cpu_seconds(server_pid) - cpu0)


def _size(uri: str) -> tuple[int, int]:
    """(bytes, objects) under a store URI or path (cases + fg index + side files)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    fs.invalidate_cache()
    found = fs.find(path, detail=True)
    files = [i for p, i in found.items() if i.get("type") != "directory" and p.rstrip("/") != path.rstrip("/")]
    return sum(int(i.get("size") or 0) for i in files), len(files)


class Reader:
    """Random fg-oversampled patches from one store, the requests drawn from one seeded generator per round."""

    def __init__(self, uri: str, patch: int) -> None:
        from voxray.preprocessing.store import Store
        from voxray.training.sampler import PatchSampler

        self.store = Store.open(uri)
        self.patch = [patch] * 3
        self.chunk = list(self.store.image(self.store.case_ids()[0]).chunks[1:])
        self.sampler = PatchSampler(self.store, self.store.case_ids(), self.patch, fg_fraction=0.33)

    def chunks_per_patch(self) -> float:
        """Expected chunks a random box of `patch` touches per array (image; the label the same): ∏(p/c + 1 − 1/c)."""
        return math.prod(p / c + 1 - 1 / c for p, c in zip(self.patch, self.chunk))

    def read(self, n: int, seed: int) -> int:
        from voxray.training.sampler import read_patch

        self.sampler.rng = np.random.default_rng(seed)  # the same patches from every store in a round
        nbytes = 0
        for _ in range(n):
            image, label = read_patch(self.store, self.sampler.draw(), self.patch)
            nbytes += image.nbytes + label.nbytes
        return nbytes


def run(args: argparse.Namespace) -> Results:
    import ray

    from voxray.preprocessing.synth import synth_dataset

    shape = (96, 96, 64) if args.quick else (240, 240, 155)
    cases = args.cases or (2 if args.quick else 4)
    patch = 64 if args.quick else 128
    tmp = Path(tempfile.mkdtemp(prefix="voxray-bench-s3-", dir=args.tmp))
    server = S3Server.reserve()
    os.environ.update(server.env())  # before Ray starts: its workers inherit endpoint and credentials
    os.environ["VOXRAY_CACHE_DIR"] = str(tmp / "cache")
    res = Results("object_store", max_spread=args.max_spread, out=Path(args.out))
    server.start(tmp / "seaweedfs")
    try:
        bucket = f"s3://{server.create_bucket('voxray-bench')}"
        data = synth_dataset("msd_brats", tmp / "msd", cases=cases, seed=0, shape=shape)
        import fsspec

        fs, path = fsspec.core.url_to_fs(f"{bucket}/data/msd")
        fs.put(str(data) + "/", path, recursive=True)
        source_bytes = sum(f.stat().st_size for f in data.rglob("*.nii.gz"))
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        n = {"i": 0}
        targets = {"local": (str(data), lambda i: str(tmp / f"local{i}.zarr")),
                   "s3": (str(data), lambda i: f"{bucket}/s3-{i}.zarr"),
                   "s3_source": (f"{bucket}/data/msd", lambda i: f"{bucket}/s3src-{i}.zarr")}
        conv = interleave({k: (lambda r=root, s=store: _convert(r, s(n["i"]), 64, server.proc.pid))
                           for k, (root, store) in targets.items()}, repeats=args.conv_repeats, warmup=1,
                          min_repeats=3, log=print, on_round=lambda r: n.update(i=r))
        res.rounds(conv)
        for k in targets:
            res.stat(f"convert_s_{k}", conv.wall[k])
            res.stat(f"convert_cpu_s_per_case_{k}", Stat([v / cases for v in conv.cpu[k].samples]))
        res.stat("convert_s3_vs_local", paired(conv.wall["s3"], conv.wall["local"]))
        res.stat("convert_s3_source_vs_local", paired(conv.wall["s3_source"], conv.wall["local"]))
        _convert(str(data), f"{bucket}/s3-chunk32.zarr", 32, server.proc.pid)
        stores = {"local_64": str(tmp / "local0.zarr"), "s3_64": f"{bucket}/s3-0.zarr",
                  "s3_32": f"{bucket}/s3-chunk32.zarr"}
        for key, uri in (("local", stores["local_64"]), ("s3", stores["s3_64"])):
            nbytes, objects = _size(uri)
            res.value(f"store_bytes_per_case_{key}", round(nbytes / cases))
            res.value(f"store_objects_per_case_{key}", round(objects / cases, 1))
        res.value("source_bytes_per_case", round(source_bytes / cases))
        readers = {k: Reader(uri, patch) for k, uri in stores.items()}
        seed = {"s": 0}
        reads = interleave({k: (lambda rd=rd: rd.read(args.per_round, seed["s"])) for k, rd in readers.items()},
                           repeats=args.repeats, log=print, on_round=lambda r: seed.update(s=r))
        res.rounds(reads)
        mb = readers["local_64"].read(1, 0) / 1e6
        for k, rd in readers.items():
            per = Stat([v / args.per_round * 1e3 for v in reads.wall[k].samples], unit="ms")
            res.stat(f"read_ms_{k}", per)
            res.stat(f"read_cpu_ms_{k}", Stat([v / args.per_round * 1e3 for v in reads.cpu[k].samples], unit="ms"))
            res.value(f"read_mb_s_{k}", round(mb / (per.median / 1e3), 1))
            res.value(f"chunks_per_patch_{k}", round(2 * rd.chunks_per_patch(), 1))
        # CPU time (this process, the S3 client's threads included) is the gated headline: a shared machine's load
        # moves it far less than wall time; the wall ratio beside it is what a loaded loader thread sees
        res.stat("read_cpu_s3_vs_local", paired(reads.cpu["s3_64"], reads.cpu["local_64"]), gate=True)
        res.stat("read_s3_vs_local", paired(reads.wall["s3_64"], reads.wall["local_64"]))
        res.stat("read_s3_chunk32_vs_64", paired(reads.wall["s3_32"], reads.wall["s3_64"]))
        res.value("config", {"cases": cases, "shape": list(shape), "patch": [patch] * 3, "chunk": 64,
                             "codec": _job(str(data), "x", 64).preprocess.codec.name, "server": "SeaweedFS (loopback)",
                             "patches_per_round": args.per_round})
        res.value("notes", "wall/CPU medians over interleaved rounds; CPU = every Ray process, not the S3 server; "
                           "read figures single-threaded (one loader thread); chunks_per_patch counts image + label "
                           "chunks a random patch touches (GET requests on S3)")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 small cases: a smoke run")
    parser.add_argument("--cases", type=int, default=None, help="synthetic cases (default 4, quick 2)")
    parser.add_argument("--conv-repeats", type=int, default=3, help="interleaved conversion rounds (≥ 3)")
    parser.add_argument("--per-round", type=int, default=8, help="patches per store per round")
    parser.add_argument("--tmp", default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--out", default=str(HERE / "results" / "object_store.json"))
    add_arguments(parser, repeats=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    for key in ("convert_s_local", "convert_s_s3", "convert_s_s3_source", "convert_cpu_s_per_case_local",
                "convert_cpu_s_per_case_s3", "read_ms_local_64", "read_ms_s3_64", "read_ms_s3_32",
                "read_cpu_ms_local_64", "read_cpu_ms_s3_64", "read_s3_vs_local", "read_cpu_s3_vs_local",
                "store_bytes_per_case_s3", "source_bytes_per_case"):
        print(f"{key:32s} {res.data.get(key)}")
    return res.write()


if __name__ == "__main__":
    sys.exit(main())

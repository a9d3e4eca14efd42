"""`make bench`: run every benchmark (each prints its own table and writes benchmarks/results/<name>.json with
medians, spreads and the load average; a headline ratio that spreads too wide is written as "not written: spread too
wide" and the script exits 3), then print one summary of the headline figures: goal, the peer each is measured
against, and met / missed."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
BENCHES = ["models", "store", "train", "serve", "predict", "object_store", "learning", "quality", "gpu"]
REFUSED = 3  # _timing.REFUSED
NNUNET = "nnU-Net 2.8.1 (its code)"


def _le(x: float) -> Callable[[float], bool]:
    return lambda v: v <= x


def _ge(x: float) -> Callable[[float], bool]:
    return lambda v: v >= x


# benchmark → key → (goal, predicate or None for info, measured against)
TARGETS: dict[str, dict[str, tuple[str, Callable[[float], bool] | None, str]]] = {
    "models": {"factorizer_params": ("= 5,855,241", lambda v: v == 5_855_241, "paper code"),
               "factorizer_gflops_128": ("170 ± 1%", lambda v: abs(v - 169.9) / 169.9 <= 0.01, "paper")},
    "store": {"read_vs_nnunet": ("≤ 1.0", _le(1.0), NNUNET + ": load_case + crop_and_pad_nd"),
              "size_vs_nnunet": ("≤ 1.0", _le(1.0), NNUNET + ": 3d_fullres .b2nd + .pkl"),
              "convert_cpu_vs_nnunet": ("≤ 1.0", _le(1.0), NNUNET + ": fingerprint + plan + preprocess"),
              "convert_cpu_rerun_vs_nnunet": ("≤ 1.0", _le(1.0), NNUNET + ": the same command again"),
              "read_vs_niigz": ("≥ 20", _ge(20), "source .nii.gz decode"),
              "read_vs_mmap": ("≤ 3.0", _le(3.0), "float32 .npy memmap"),
              "size_vs_niigz": ("(info)", None, "source .nii.gz")},
    "train": {"loader_overhead": ("≤ 1.10", _le(1.10), "same step on in-memory batches"),
              "ray_data_vs_direct": ("(info)", None, "direct threaded loader"),
              "ddp_speedup_2w": ("(info, 2 cores)", None, "1 worker")},
    "serve": {"http_overhead": ("≤ 1.2", _le(1.2), "in-process predict, same work"),
              "batching_gain": ("≥ 1.5", _ge(1.5), "max_batch_size 1"),
              "forward_16_vs_4": ("(reason)", None, "network windows/s at 4 windows/pass"),
              "errors": ("= 0", lambda v: v == 0, "-")},
    "predict": {"predict_overhead": ("≤ 1.15", _le(1.15), "bare network forward, same windows"),
                "predict_overhead_cpu": ("(info)", None, "bare network forward, CPU time"),
                "tta_cost": ("(info, ~8)", None, "no TTA"), "outputs_cost": ("(info)", None, "mask only")},
    "object_store": {"convert_s3_vs_local": ("(info)", None, "the same conversion to a local store"),
                     "read_cpu_s3_vs_local": ("(info)", None, "patch reads from the local store, CPU time"),
                     "read_s3_vs_local": ("(info)", None, "patch reads from the local store, wall")},
    "learning": {f"{d}_gain": ("> 0", lambda v: v > 0, "per-voxel Bayes baseline, same cases")
                 for d in ("msd_brats", "ibsr18", "lgg_tif", "uwmadison_gi")},
    "quality": {**{f"{d}_planned_minus_hand": ("≥ 0", _ge(0.0), "hand-written example recipe, same CPU budget")
                   for d in ("msd_brats", "ibsr18", "ibsr18_5mm")},
                **{f"{d}_planned_minus_nnunet": ("(info)", None, NNUNET + ": its planner and trainer, same budget")
                   for d in ("msd_brats", "ibsr18", "ibsr18_5mm")}},
    "gpu": {"step_s": ("(info)", None, "paper: 16.6 GB at 128³"), "step_peak_memory_gib": ("(info)", None, "-"),
            "inference_s": ("(info)", None, "-"), "loader_keeps_up": ("≥ 1.0", _ge(1.0), "GPU steps/s"),
            "loader_overhead_gpu": ("≤ 1.10", _le(1.10), "in-memory batches"),
            "ddp_efficiency": ("(info)", None, "1 GPU")},
}


def _mean_dice(rows: list[dict], key: str) -> float | None:
    return next((r.get(key) for r in rows if r.get("output") == "mean"), None)


def _flatten(name: str, data: dict) -> dict:
    """learning.json and quality.json hold one block per dataset: their headline figures as flat keys (mean Dice of
    the model minus the baseline's; of voxray plan's recipe minus the hand-written one's / nnU-Net's)."""
    flat = dict(data)
    for block in data.get("results", []) if name in ("learning", "quality") else []:
        if name == "learning":
            flat[f"{block['layout']}_gain"] = _mean_dice(block["rows"], "gain")
            continue
        planned = _mean_dice((block.get("planned") or {}).get("rows", []), "model_dice")
        for peer, key in (("hand_written", "hand"), ("nnunet", "nnunet")):
            other = _mean_dice((block.get(peer) or {}).get("rows", []), "model_dice")
            if planned is not None and other is not None:
                flat[f"{block['dataset']}_planned_minus_{key}"] = round(planned - other, 4)
    return flat


def _shown(value: Any, spread: dict | None) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}"
    else:
        text = str(value)
    if spread and spread.get("unit") == "×":
        text += f" [{spread['iqr'][0]:.3g}–{spread['iqr'][1]:.3g}]"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small CI-sized runs")
    parser.add_argument("--only", nargs="*", choices=BENCHES, default=BENCHES)
    args = parser.parse_args()
    status: dict[str, int] = {}
    for name in args.only:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick and name != "gpu" else [])]
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        status[name] = subprocess.run(cmd).returncode
    print(f"\n{'benchmark':<9} {'key':<28} {'median [IQR]':>22}  {'goal':<16} {'met':<4} measured against")
    for name in args.only:
        quick = HERE / "results" / f"{name}_quick.json"  # benchmarks that keep quick runs apart (predict)
        path = quick if args.quick and quick.exists() else HERE / "results" / f"{name}.json"
        if status[name] not in (0, REFUSED):
            print(f"{name:<9} failed (exit {status[name]})")
            continue
        if not path.exists():
            print(f"{name:<9} (no results: nothing measured here)")
            continue
        data = _flatten(name, json.loads(path.read_text()))
        for key, (goal, ok, peer) in TARGETS[name].items():
            value = data.get(key)
            if value is None:
                continue
            met = "-" if ok is None or not isinstance(value, (int, float)) else ("yes" if ok(value) else "NO")
            print(f"{name:<9} {key:<28} {_shown(value, data.get('stats', {}).get(key)):>22}  {goal:<16} {met:<4} "
                  f"{peer}")
    failed = [n for n, rc in status.items() if rc not in (0, REFUSED)]
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

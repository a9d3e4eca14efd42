"""Model zoo benchmark: parameters, forward GFLOPs, CPU forward+backward time and peak memory per model.

FLOPs use `FlopCounterMode` on meta tensors (2 × multiply-adds of conv/linear/matmul, the convention that
reproduces the Factorizer paper), so the 128³ BraTS figures are counted without running anything. Timing runs
one model per subprocess (batch 1, train mode, fp32, torch's default CPU threads; ≥ 5 repeats after a warm-up, median
and IQR, the load average beside each row; nothing is compared, so nothing is gated) and its peak resident memory
(VmHWM after resetting it, minus the RSS with the model built) is that of the forward+backward alone. Writes benchmarks/results/models.json and prints a table.

    .venv/bin/python benchmarks/models.py            # seeds' patch sizes, a few minutes on 2 idle cores
    .venv/bin/python benchmarks/models.py --quick    # CI-sized: only the small models are timed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAPER = {"factorizer_params_paper_m": 5.86, "factorizer_gflops_128_paper": 170.0,
         "resunet_params_paper_m": 28.9, "resunet_gflops_128_paper": 1165.0,
         "factorizer_isles_params_paper_m": 7.3, "factorizer_isles_gflops_64_paper": 29.0}
BRATS = {"name": "swin_factorizer"}
ISLES = {"name": "swin_factorizer", "window": 4, "head_dim": 4, "mlp_ratio": 4}
SEED_FACT = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4}

# (label, spec, in, out, patch, timed in full mode, timed in quick mode); patches follow examples/jobs seeds.
ROWS = [
    ("swin_factorizer brats", BRATS, 4, 3, (128, 128, 128), False, False),
    ("swin_factorizer isles", ISLES, 2, 1, (64, 64, 64), True, False),
    ("swin_factorizer seed", SEED_FACT, 4, 3, (32, 32, 32), True, True),
    ("unet ibsr18", {"name": "unet", "channels": [16, 32, 64, 128], "num_res_units": 1}, 1, 4, (32, 32, 32), True, True),
    ("segresnet", {"name": "segresnet"}, 4, 3, (64, 64, 64), True, False),
    ("unetr", {"name": "unetr"}, 4, 3, (64, 64, 64), True, False),
    ("swinunetr", {"name": "swinunetr"}, 4, 3, (64, 64, 64), True, False),
    ("efficientnet_unet lgg", {"name": "efficientnet_unet"}, 3, 1, (128, 128), True, True),
    ("unet_depth lgg", {"name": "unet_depth", "depth": 4, "base_channels": 16}, 3, 1, (128, 128), True, True),
    ("deeplabv3plus gi", {"name": "deeplabv3plus", "aspp_channels": 64}, 1, 3, (128, 128), True, True),
]


def _build(spec: dict, cin: int, cout: int, patch: tuple):
    from pydantic import TypeAdapter

    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import build_model

    model_spec = TypeAdapter(ModelSpec).validate_python(spec)
    return build_model(model_spec, in_channels=cin, out_channels=cout, spatial_dims=len(patch), patch=patch)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5) so VmHWM measures only what follows; → RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux: the peak then includes imports and model construction
    return _status_kb("VmRSS")


def _worker(args: dict) -> dict:
    """In a fresh process: build, then time forward+backward; report time and peak RSS growth."""
    import torch

    torch.manual_seed(0)
    model = _build(args["spec"], args["cin"], args["cout"], tuple(args["patch"])).train()
    x = torch.randn(1, args["cin"], *args["patch"])
    base_kb = _reset_peak()
    times = []
    for _ in range(args["repeats"] + 1):  # the first run warms up allocators and kernels
        start = time.perf_counter()
        out = model(x)
        outs = out if isinstance(out, list) else [out]
        sum(o.float().mean() for o in outs).backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak_kb = _status_kb("VmHWM")
    q1, _, q3 = statistics.quantiles(times[1:], n=4, method="inclusive")
    return {"fwd_bwd_s": statistics.median(times[1:]), "fwd_bwd_s_iqr": [round(q1, 4), round(q3, 4)],
            "fwd_bwd_s_samples": [round(t, 4) for t in times[1:]], "peak_mem_mib": (peak_kb - base_kb) / 1024,
            "loadavg_1m": os.getloadavg()[0]}


def _count(spec: dict, cin: int, cout: int, patch: tuple) -> dict:
    from voxray.training.models.profile import count_params, forward_profile

    model = _build(spec, cin, cout, patch)
    return {"params": count_params(model), "gflops": forward_profile(model, cin, patch)["gflops"]}


def _timed(spec: dict, cin: int, cout: int, patch: tuple, repeats: int) -> dict:
    payload = json.dumps({"spec": spec, "cin": cin, "cout": cout, "patch": list(patch), "repeats": repeats})
    proc = subprocess.run([sys.executable, __file__, "--worker", payload], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, repeats: int = 5) -> dict:
    load_before = os.getloadavg()[0]
    rows = []
    for label, spec, cin, cout, patch, timed_full, timed_quick in ROWS:
        row = {"model": label, "spec": spec, "in": cin, "out": cout, "patch": list(patch), **_count(spec, cin, cout, patch)}
        if timed_quick if quick else timed_full:
            row.update(_timed(spec, cin, cout, patch, repeats=repeats))
        rows.append(row)
        print(f"  {label}: done", file=sys.stderr, flush=True)
    brats, isles = rows[0], rows[1]
    return {"quick": quick, "factorizer_params": brats["params"], "factorizer_gflops_128": round(brats["gflops"], 2),
            "factorizer_isles_params": isles["params"], "factorizer_isles_gflops_64": round(isles["gflops"], 2),
            **PAPER, "loadavg_1m": os.getloadavg()[0], "loadavg_1m_before": load_before, "repeats": repeats,
            "cpu_count": os.cpu_count(), "rows": rows}


def _table(result: dict) -> None:
    print(f"{'model':<24} {'patch':<14} {'params (M)':>10} {'GFLOPs':>9} {'fwd+bwd s (IQR)':>18} {'peak MiB':>9}")
    for r in result["rows"]:
        t = (f"{r['fwd_bwd_s']:.2f} ({r['fwd_bwd_s_iqr'][0]:.2f}–{r['fwd_bwd_s_iqr'][1]:.2f})" if "fwd_bwd_s" in r
             else ("error" if "error" in r else "-"))
        m = f"{r['peak_mem_mib']:.0f}" if "peak_mem_mib" in r else "-"
        print(f"{r['model']:<24} {'x'.join(map(str, r['patch'])):<14} {r['params'] / 1e6:>10.3f} {r['gflops']:>9.1f} "
              f"{t:>18} {m:>9}")
    print(f"{'paper: Swin Factorizer':<24} {'128x128x128':<14} {5.86:>10.3f} {170.0:>9.1f}")
    print(f"{'paper: Res-U-Net':<24} {'128x128x128':<14} {28.9:>10.3f} {1165.0:>9.1f}")
    print(f"load average (1 min) during the run: {result['loadavg_1m']:.1f} on {result['cpu_count']} CPUs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized: time only the small seed models")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per model (≥ 5)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "models.json")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0
    if args.repeats < 5:
        parser.error("--repeats: at least 5 for a median and a spread (benchmarks/_timing.py)")
    result = run(args.quick, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    _table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: run every benchmark (each prints its own table and writes benchmarks/results/<name>.json), then
print one summary table of the headline ratios against their targets."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["models", "store", "train", "serve"]
# key → (target description, predicate)
TARGETS = {
    "store": {"patch_read_vs_blosc2": ("≤ 1.0", lambda v: v <= 1.0), "patch_read_vs_niigz": ("≥ 20", lambda v: v >= 20),
              "patch_read_vs_mmap": ("≤ 3.0", lambda v: v <= 3.0), "convert_speedup": ("≥ 1.7", lambda v: v >= 1.7),
              "size_vs_niigz": ("(info)", None)},
    "models": {"factorizer_params": ("= 5,855,241", lambda v: v == 5_855_241),
               "factorizer_gflops_128": ("170 ± 1%", lambda v: abs(v - 169.9) / 169.9 <= 0.01)},
    "train": {"loader_overhead": ("≤ 1.10", lambda v: v <= 1.10), "ddp_speedup_2w": ("(info, 2 cores)", None),
              "sw_vs_monai": ("≤ 1.0", lambda v: v <= 1.0)},
    "serve": {"http_overhead": ("≤ 1.2", lambda v: v <= 1.2), "batching_gain": ("≥ 1.5", lambda v: v >= 1.5),
              "errors": ("= 0", lambda v: v == 0)},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small CI-sized runs")
    parser.add_argument("--only", nargs="*", choices=BENCHES, default=BENCHES)
    args = parser.parse_args()
    failed = []
    for name in args.only:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n=== benchmarks/{name}.py ===", flush=True)
        if subprocess.run(cmd).returncode != 0:
            failed.append(name)
    print(f"\n{'benchmark':<8} {'key':<24} {'value':>12}  target       met")
    for name in args.only:
        path = HERE / "results" / f"{name}.json"
        if not path.exists():
            print(f"{name:<8} (no results)")
            continue
        data = json.loads(path.read_text())
        for key, (target, ok) in TARGETS[name].items():
            value = data.get(key)
            met = "-" if ok is None or value is None else ("yes" if ok(value) else "NO")
            shown = f"{value:.3g}" if isinstance(value, float) else str(value)
            print(f"{name:<8} {key:<24} {shown:>12}  {target:<12} {met}")
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

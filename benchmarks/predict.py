"""Prediction benchmark on a BraTS-size volume → benchmarks/results/predict.json.

- predict_overhead: median end-to-end in-process predict (read the 4D .nii.gz, decode, preprocess, sliding window,
  decode logits, uncertainty score, invert to the input grid, write the mask) ÷ median bare network forward over
  the same number of windows in the same batches: per-round paired ratios of interleaved rounds (benchmarks/_timing),
  median reported and gated on its spread (target ≤ 1.15). Both the wall-time and the process-CPU-time ratios are
  recorded; `--headline cpu --threads 1` makes the CPU one the headline, which other users' load barely moves.
- windows_per_s: windows of the volume ÷ end-to-end seconds (and ÷ bare-forward seconds), per round (info).
- tta_cost: end-to-end with mirror TTA (8 members) ÷ without, on a 128×128×96 volume (info; nnU-Net's is ~8×).
- outputs_cost: end-to-end with probabilities + uncertainty maps ÷ mask only, same volume (info).
  Both in the headline's clock (`_wall` and `_cpu` variants recorded).
- ensemble_cost: end-to-end with a 2-member ensemble (same architecture, other weights) ÷ one model, same volume
  (info; members run one after the other, so ~2× is the expectation).
- onnx_forward_ratio: onnxruntime ÷ torch time for the network alone over the same windows (the small volume's) in
  the same batches, interleaved paired rounds, CPU and wall (info; below 1 = onnxruntime faster), with the max
  |Δ logits| of the export; onnx_end_to_end: end-to-end predict with `backend: onnxruntime` ÷ torch (info).
- cli_wall_s: one `voxray predict` process (imports, model load, progress lines on stderr) at full size (info).

Model: an untrained demo-size Swin Factorizer (widths 8-16-32-64, window 4, head_dim 4, mlp_ratio 2, 32³ patch;
speed does not depend on the weights), the card's default settings (overlap 0.25, 4 windows per forward).
Volume: 240×240×155, 4 channels int16, a skull-stripped ellipsoid head (~140×170×130 voxels nonzero) built in memory.
Run: `python benchmarks/predict.py [--quick] [--repeats N]` (--quick writes results/predict_quick.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _demo_model import MODEL, make_model
from _timing import Results, Stat, add_arguments, interleave, paired

FULL, SMALL = (240, 240, 155), (128, 128, 96)


def make_volume(path: Path, shape: tuple[int, int, int]) -> Path:
    """A 4D int16 NIfTI: a noisy ellipsoid head (semi-axes ~29/35/42 % of the grid) on a zero background."""
    import nibabel as nib

    grid = np.meshgrid(*[(np.arange(n) - n / 2) / n for n in shape], indexing="ij", sparse=True)
    inside = (grid[0] / 0.29) ** 2 + (grid[1] / 0.35) ** 2 + (grid[2] / 0.42) ** 2 < 1
    rng = np.random.default_rng(0)
    data = np.zeros((*shape, 4), np.int16)
    for c in range(4):
        data[..., c][inside] = rng.normal(400 + 100 * c, 60, int(inside.sum()))
    nib.Nifti1Image(data, np.diag([-1.0, -1.0, 1.0, 1.0])).to_filename(str(path))
    return path


def end_to_end(predictor, path: Path, out: Path, outputs=("mask",), tta=None) -> None:
    from voxray.training.predict import output_images, predict_images

    prediction, like = predict_images(predictor, path, outputs, tta=tta)
    for name, img in output_images(prediction, like).items():
        img.to_filename(str(out.with_name(f"{name}.nii.gz")))


def bare_forward(predictor, windows: int) -> None:
    """The network alone over `windows` random windows, in the predictor's batches (the last one partial)."""
    import torch

    from voxray.training.inference import first_head

    s = predictor.settings
    x = torch.randn(s.batch, len(predictor.channels), *s.window)
    with torch.no_grad():
        for start in range(0, windows, s.batch):
            first_head(predictor.model(x[: min(s.batch, windows - start)]))


def window_count(predictor, path: Path) -> tuple[int, list[int]]:
    from voxray.training.inference import count_windows
    from voxray.training.predict import load_images, volume_from_images

    prepared = predictor.prepare(volume_from_images(load_images(path), predictor.channels))
    grid = list(prepared.image.shape[1:])
    return count_windows(grid, predictor.settings.window, predictor.settings.overlap), grid


def ensemble_and_onnx(res: Results, args: argparse.Namespace, root: Path, model: Path, small: Path,
                      predictor) -> None:
    """ensemble_cost (2 members ÷ 1), onnx_forward_ratio (same windows, same batches) and onnx_end_to_end."""
    from voxray.training.ensemble import export_ensemble
    from voxray.training.onnx_export import export_onnx
    from voxray.training.predict import Predictor

    ensemble = Predictor.from_registry(export_ensemble([model, make_model(root, "demo-b", seed=1)], "demo-ens"),
                                       device="cpu")
    started = time.perf_counter()
    block = export_onnx(model)
    res.value("onnx_export", {**block, "export_s": round(time.perf_counter() - started, 1)})
    onnx = Predictor.from_registry(model, backend="onnxruntime")
    windows, _ = window_count(predictor, small)
    out = root / "o.nii.gz"
    runs = interleave({"plain": lambda: end_to_end(predictor, small, out),
                       "ensemble_2": lambda: end_to_end(ensemble, small, out),
                       "onnx_end_to_end": lambda: end_to_end(onnx, small, out),
                       "torch_windows": lambda: bare_forward(predictor, windows),
                       "onnx_windows": lambda: bare_forward(onnx, windows)},
                      args.tta_repeats, warmup=1, min_repeats=1, log=lambda line: print(line, flush=True))
    res.rounds(runs)
    res.value("onnx_windows", windows)
    for kind in ("wall", "cpu"):
        t = getattr(runs, kind)
        res.stat(f"ensemble_cost_{kind}", paired(t["ensemble_2"], t["plain"]))
        res.stat(f"onnx_forward_ratio_{kind}", paired(t["onnx_windows"], t["torch_windows"]))
        res.stat(f"onnx_end_to_end_{kind}", paired(t["onnx_end_to_end"], t["plain"]))
    t = getattr(runs, args.headline)
    ens = res.stat("ensemble_cost", paired(t["ensemble_2"], t["plain"]))
    ratio = res.stat("onnx_forward_ratio", paired(t["onnx_windows"], t["torch_windows"]))
    print(f"2-member ensemble costs {ens:.2f}×; onnxruntime ÷ torch over {windows} windows {ratio:.2f} "
          f"({args.headline}; {block['exporter']} exporter, max |Δ logits| {block['max_abs_diff']:.2g})", flush=True)


def cli_run(model: Path, path: Path, out: Path) -> dict:
    env = dict(os.environ, VOXRAY_PROGRESS_INTERVAL="10")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "voxray.platform.cli.app", "predict", "-m", str(model), "-i",
                           str(path), "-o", str(out)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stderr.splitlines() if "windows" in line]
    return {"cli_wall_s": round(time.perf_counter() - start, 2), "cli_rc": proc.returncode,
            "cli_progress_lines": len(lines), "cli_last_progress": lines[-1] if lines else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"a {SMALL} volume instead of {FULL}, no CLI run")
    parser.add_argument("--tta-repeats", type=int, default=3, help="rounds of the TTA and outputs costs (info)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--headline", choices=("wall", "cpu"), default="wall",
                        help="which paired ratio is `predict_overhead` (and gated): wall time, or this process's CPU "
                             "time — with --threads 1 the CPU ratio does not move with other users' load")
    add_arguments(parser)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from voxray.training.predict import Predictor

    shape = SMALL if args.quick else FULL
    res = Results("predict_quick" if args.quick else "predict", max_spread=args.max_spread)
    for key, value in {"shape": list(shape), "channels": 4, "model": MODEL, "patch": [32, 32, 32],
                       "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                       "torch": torch.__version__}.items():
        res.value(key, value)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, path = make_model(root), make_volume(root / "case.nii.gz", shape)
        predictor = Predictor.from_registry(model, device="cpu")
        windows, grid = window_count(predictor, path)
        res.value("settings", predictor.settings.describe())
        res.value("model_grid", grid)
        res.value("windows", windows)
        print(f"{shape} → model grid {grid}: {windows} windows; {predictor.settings.describe()}", flush=True)
        rounds = interleave({"end_to_end": lambda: end_to_end(predictor, path, root / "out.nii.gz"),
                             "bare_forward": lambda: bare_forward(predictor, windows)}, args.repeats,
                            log=lambda line: print(line, flush=True))
        res.rounds(rounds)
        res.stat("end_to_end_s", rounds.wall["end_to_end"])
        res.stat("bare_forward_s", rounds.wall["bare_forward"])
        for key, name in (("windows_per_s", "end_to_end"), ("windows_per_s_bare", "bare_forward")):
            res.stat(key, Stat([windows / v for v in rounds.wall[name].samples], unit="windows/s"), digits=2)
        ratios = {kind: paired(getattr(rounds, kind)["end_to_end"], getattr(rounds, kind)["bare_forward"])
                  for kind in ("wall", "cpu")}
        wall = res.stat("predict_overhead_wall", ratios["wall"])
        cpu = res.stat("predict_overhead_cpu", ratios["cpu"])
        overhead = res.stat("predict_overhead", ratios[args.headline], gate=True)
        res.value("headline", args.headline)
        small = make_volume(root / "small.nii.gz", SMALL)
        costs = interleave({"plain": lambda: end_to_end(predictor, small, root / "o.nii.gz"),
                            "tta_mirror": lambda: end_to_end(predictor, small, root / "o.nii.gz", tta="mirror"),
                            "all_outputs": lambda: end_to_end(predictor, small, root / "o.nii.gz",
                                                              ("mask", "probabilities", "uncertainty"))},
                           args.tta_repeats, warmup=0, min_repeats=1, log=lambda line: print(line, flush=True))
        res.rounds(costs)
        res.value("tta_shape", list(SMALL))
        ensemble_and_onnx(res, args, root, model, small, predictor)
        res.stat("tta_plain_s", costs.wall["plain"])
        res.stat("tta_mirror_s", costs.wall["tta_mirror"])
        for kind in ("wall", "cpu"):
            runs = getattr(costs, kind)
            res.stat(f"tta_cost_{kind}", paired(runs["tta_mirror"], runs["plain"]))
            res.stat(f"outputs_cost_{kind}", paired(runs["all_outputs"], runs["plain"]))
        tta = res.stat("tta_cost", paired(getattr(costs, args.headline)["tta_mirror"],
                                          getattr(costs, args.headline)["plain"]))
        outs = res.stat("outputs_cost", paired(getattr(costs, args.headline)["all_outputs"],
                                               getattr(costs, args.headline)["plain"]))
        if not args.quick:
            for key, value in cli_run(model, path, root / "cli_mask.nii.gz").items():
                res.value(key, value)
    print(f"\npredict_overhead {overhead:.3f} ({args.headline}; target ≤ 1.15; wall {wall:.3f}, CPU {cpu:.3f}) over "
          f"{windows} windows; "
          f"TTA ×8 costs {tta:.2f}×, probabilities + uncertainty maps {outs:.2f}×")
    return res.write()


if __name__ == "__main__":
    sys.exit(main())

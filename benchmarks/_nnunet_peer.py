"""The nnU-Net side of the peer benchmarks; runs under .venv-peers/bin/python (`make bench-peers`), never imports
voxray. It uses nnU-Net v2's own code paths and files: MSD conversion, fingerprint + plan + 3d_fullres preprocessing
(its blosc2 files), and its training loader's per-sample read (`load_case` + `crop_and_pad_nd` for image and seg,
exactly as `nnUNetDataLoader.generate_train_batch` calls them).

Protocol: one JSON request per stdin line → one JSON reply per line on the original stdout (everything nnU-Net
prints goes to stderr). Requests: {"op": "prepare", "msd": DIR, "np": N} · {"op": "convert", "fresh": bool,
"np": N} · {"op": "shapes"} · {"op": "read", "items": [[case, [[lo, hi] × 3]], ...]} · {"op": "quit"}.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

DATASET_ID, TASK = 1, "Task01_BrainTumour"
DATASET = "Dataset001_BrainTumour"


def _cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class Peer:
    def __init__(self, work: Path) -> None:
        self.work = work
        for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            (work / name).mkdir(parents=True, exist_ok=True)
            os.environ[name] = str(work / name)
        self.folder = work / "nnUNet_preprocessed" / DATASET / "nnUNetPlans_3d_fullres"
        self.dataset = None

    def prepare(self, msd: str, np: int) -> dict:
        """MSD Task01 (4D NIfTI) → nnU-Net raw (one file per modality) with nnU-Net's own converter (not timed:
        it is a one-off format change, not preprocessing)."""
        from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset

        if not (self.work / "nnUNet_raw" / DATASET / "dataset.json").is_file():
            src = self.work / "src" / TASK
            src.parent.mkdir(parents=True, exist_ok=True)
            if not src.exists():
                src.symlink_to(Path(msd).resolve(), target_is_directory=True)
            convert_msd_dataset(str(src), num_processes=np)
        return {"cases": len(list((self.work / "nnUNet_raw" / DATASET / "labelsTr").glob("*.nii.gz")))}

    def convert(self, fresh: bool, np: int) -> dict:
        """Fingerprint + plan + 3d_fullres preprocessing as `nnUNetv2_plan_and_preprocess -c 3d_fullres -np N`
        (fresh: from nothing, as `--clean`; a rerun: what the command does again with its files in place)."""
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                          preprocess)

        if fresh:
            shutil.rmtree(self.work / "nnUNet_preprocessed" / DATASET, ignore_errors=True)
        cpu, wall = _cpu(), time.perf_counter()
        extract_fingerprints([DATASET_ID], num_processes=np, clean=fresh, verbose=False, show_progress_bar=False)
        plan_experiments([DATASET_ID])
        preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(np,), show_progress_bar=False)
        wall, cpu = time.perf_counter() - wall, _cpu() - cpu
        files = [f for f in self.folder.iterdir() if f.suffix in (".b2nd", ".pkl")]
        self.dataset = None
        return {"wall": wall, "cpu": cpu, "bytes": sum(f.stat().st_size for f in files),
                "image_bytes": sum(f.stat().st_size for f in files if f.suffix == ".b2nd" and "_seg" not in f.name),
                "cases": sum(1 for f in files if f.suffix == ".pkl"), "folder": str(self.folder)}

    def _data(self):
        if self.dataset is None:
            from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

            cls = infer_dataset_class(str(self.folder))
            self.dataset = cls(str(self.folder))
        return self.dataset

    def shapes(self) -> dict:
        import blosc2

        data = self._data()
        return {"class": type(data).__name__, "shapes": {
            k: list(blosc2.open(str(self.folder / f"{k}.b2nd"), mode="r").shape) for k in data.identifiers}}

    def read(self, items: list) -> dict:
        """The loader's per-sample read (nnUNetDataLoader.generate_train_batch): load_case, then image cropped and
        padded with 0 → float32 tensor, seg cropped and padded with -1 → int16 tensor; one thread, as its workers."""
        import numpy as np
        import torch
        from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
        from threadpoolctl import threadpool_limits

        dataset = self._data()
        cpu, wall = time.process_time(), time.perf_counter()
        with torch.no_grad(), threadpool_limits(limits=1, user_api=None):
            for case, bbox in items:
                data, seg, _, _ = dataset.load_case(case)
                image = torch.from_numpy(crop_and_pad_nd(data, bbox, 0)).float()
                label = torch.from_numpy(crop_and_pad_nd(seg, bbox, -1, cast_cropped_to=np.int16)).to(torch.int16)
                assert image.shape[1:] == label.shape[1:] == tuple(hi - lo for lo, hi in bbox)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def main() -> int:
    work = Path(sys.argv[1])
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # nnU-Net (and its worker processes) print progress: keep it off the reply channel
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(1)
    peer = Peer(work)
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        if op == "quit":
            break
        try:
            out = {"ok": True, **getattr(peer, op)(**req)}
        except Exception as exc:  # reported to the caller, which fails the benchmark with it
            traceback.print_exc()
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply.write(json.dumps(out) + "\n")
        reply.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

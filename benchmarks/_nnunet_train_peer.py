"""nnU-Net v2 as a quality-benchmark arm; runs under .venv-peers/bin/python, never imports voxray.

`python _nnunet_train_peer.py REQUEST.json REPLY.json`. The request names a dataset already written in nnU-Net's
raw format (benchmarks/quality_nnunet.py writes it), the training/validation case ids (voxray's split for the
seed) and a CPU budget. Everything else is nnU-Net's own code path: fingerprint + `3d_fullres` plan +
preprocessing (`plan_and_preprocess_api`), `splits_final.json` for the fold (its mechanism for fixed splits), its
`nnUNetTrainer` on the CPU (`run_training`), and its validation (`perform_actual_validation`: sliding window with
mirroring, export to the raw geometry) — the same steps as `nnUNetv2_plan_and_preprocess` + `nnUNetv2_train
-device cpu`.

The one change is `nnUNetTrainerCPUBudget`: nnU-Net trains 1000 epochs × 250 iterations; here the number of
iterations follows the budget the same way voxray's steps do: three real iterations are timed (CPU time of
`train_step`, best of the last two) after the trainer has started, and iterations = budget × 90 % / that time,
split into ~10 epochs (so the poly schedule decays over the run, and its per-epoch pseudo-Dice is logged 10
times), each followed by 2 of its validation iterations instead of 50.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path


def _cpu_all() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _trainer_class():
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    class nnUNetTrainerCPUBudget(nnUNetTrainer):
        """nnUNetTrainer whose iteration count is fitted to a CPU budget (see the module docstring)."""

        budget_seconds = 120.0
        timing: dict = {}

        def on_train_start(self):
            super().on_train_start()
            batches = [next(self.dataloader_train) for _ in range(3)]
            times = []
            for batch in batches:
                t0 = time.process_time()
                self.train_step(batch)
                times.append(time.process_time() - t0)
            step = min(times[1:])
            total = max(1, int(self.budget_seconds * 0.9 / step))
            self.num_iterations_per_epoch = max(1, min(250, round(total / 10)))
            self.num_epochs = max(1, math.ceil(total / self.num_iterations_per_epoch))
            self.num_val_iterations_per_epoch = 2
            self.optimizer, self.lr_scheduler = self.configure_optimizers()  # poly over the new epoch count
            self.timing.update(step_seconds=step, iterations=self.num_epochs * self.num_iterations_per_epoch,
                               epochs=self.num_epochs, iterations_per_epoch=self.num_iterations_per_epoch,
                               train_step_cpu=0.0)

        def train_step(self, batch: dict) -> dict:
            t0 = time.process_time()
            out = super().train_step(batch)
            if "train_step_cpu" in self.timing:
                self.timing["train_step_cpu"] += time.process_time() - t0
            return out

    return nnUNetTrainerCPUBudget


def run(req: dict) -> dict:
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                      preprocess)

    torch.set_num_threads(1)  # as voxray's arms: the budget is CPU-seconds on one thread
    dataset_id, name = req["dataset_id"], req["dataset_name"]
    pre = Path(os.environ["nnUNet_preprocessed"]) / name
    out: dict = {}
    if not (pre / "nnUNetPlans.json").is_file():
        cpu, wall = _cpu_all(), time.perf_counter()
        extract_fingerprints([dataset_id], num_processes=1, clean=True, verbose=False)
        plan_experiments([dataset_id])
        preprocess([dataset_id], configurations=("3d_fullres",), num_processes=(1,))
        out["preprocess"] = {"cpu_seconds": round(_cpu_all() - cpu, 1),
                             "wall_seconds": round(time.perf_counter() - wall, 1)}
    os.environ["nnUNet_n_proc_DA"] = "0"  # augmentation in this process (the planner above needs ≥ 1)
    torch.set_num_threads(1)  # the planner's memory estimate changes it
    save_json([{"train": req["train"], "val": req["val"]}], str(pre / "splits_final.json"))
    plans, dataset_json = load_json(str(pre / "nnUNetPlans.json")), load_json(str(pre / "dataset.json"))
    plans["continue_training"] = False  # as nnunetv2.run.run_training.get_trainer_from_args sets it
    config = plans["configurations"]["3d_fullres"]
    out["plan"] = {"patch": config["patch_size"], "batch_size": config["batch_size"],
                   "spacing": config["spacing"], "features": config["architecture"]["arch_kwargs"]["features_per_stage"],
                   "network": config["architecture"]["network_class_name"].rsplit(".", 1)[-1]}
    cls = _trainer_class()
    cls.budget_seconds = float(req["budget_seconds"])
    cls.timing = {}
    results = Path(os.environ["nnUNet_results"]) / name / f"{cls.__name__}__nnUNetPlans__3d_fullres"
    shutil.rmtree(results, ignore_errors=True)
    trainer = cls(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    cpu, wall = time.process_time(), time.perf_counter()
    trainer.run_training()
    out["train"] = {**cls.timing, "cpu_seconds": round(time.process_time() - cpu, 1),
                    "wall_seconds": round(time.perf_counter() - wall, 1)}
    cpu, wall = _cpu_all(), time.perf_counter()
    trainer.perform_actual_validation(False)
    out["validate"] = {"cpu_seconds": round(_cpu_all() - cpu, 1), "wall_seconds": round(time.perf_counter() - wall, 1)}
    out["predictions"] = str(Path(trainer.output_folder) / "validation")
    return out


def main() -> int:
    request, reply = Path(sys.argv[1]), Path(sys.argv[2])
    req = json.loads(request.read_text())
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[key] = req[key]
    os.environ.update({"nnUNet_n_proc_DA": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "f"})
    reply.write_text(json.dumps(run(req)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

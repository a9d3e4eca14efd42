"""The nnU-Net v2 arm of benchmarks/quality.py: the same cases, split and CPU budget, nnU-Net's own planning,
preprocessing, trainer and predictor (in .venv-peers, through `_nnunet_train_peer.py`), scored here with voxray's
Dice/HD95 code on the raw grid.

voxray writes the dataset in nnU-Net's raw format (`imagesTr/<case>_<channel>.nii.gz`, `labelsTr/<case>.nii.gz`,
`dataset.json`) from the layout adapter's decoded volumes — the same arrays and affines voxray's preprocessing
starts from — with plain labels (nnU-Net's default for MSD Task01), so nnU-Net plans from what voxray plans from.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def write_raw(root: Path, layout: str, work: Path, dataset_id: int) -> tuple[str, dict]:
    """The dataset in nnU-Net raw format under work/nnUNet_raw; (dataset folder name, {case: (spacing, label path)})."""
    import nibabel as nib

    from voxray.platform.specs.preprocess import DatasetSpec
    from voxray.preprocessing.datasets import adapter_from_spec

    adapter = adapter_from_spec(DatasetSpec(layout=layout, root=str(root)))
    name = f"Dataset{dataset_id:03d}_{layout.replace('_', '')}"
    raw = work / "nnUNet_raw" / name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    labels = {int(k): v for k, v in adapter.metadata()["labels"].items()}
    if sorted(labels) != list(range(len(labels))):
        raise ValueError(f"{layout}: nnU-Net needs consecutive label values, got {sorted(labels)}")
    cases, channels = {}, None
    for case in sorted((c for c in adapter.discover(root) if c.ok), key=lambda c: c.case_id):
        vol = adapter.load(case)
        channels = vol.channels
        for i in range(len(vol.channels)):
            nib.save(nib.Nifti1Image(vol.image[i].astype(np.float32), vol.affine),
                     raw / "imagesTr" / f"{case.case_id}_{i:04d}.nii.gz")
        label = raw / "labelsTr" / f"{case.case_id}.nii.gz"
        nib.save(nib.Nifti1Image(vol.label.astype(np.uint8), vol.affine), label)
        cases[case.case_id] = (list(vol.spacing), str(label))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {str(i): c for i, c in enumerate(channels)},
        "labels": {labels[k] if k else "background": k for k in sorted(labels)},
        "numTraining": len(cases), "file_ending": ".nii.gz"}, indent=1))
    return name, cases


def score_label_maps(pred: np.ndarray, truth: np.ndarray, task: str, meta: dict, spacing) -> dict[str, float]:
    """`case_metrics` (validation's Dice and HD95) of two label maps: each map becomes ±1 logits of its own
    encoding, so thresholding/argmax gives the map back and every figure is computed as validation computes it."""
    import torch

    from voxray.training import tasks
    from voxray.training.metrics import case_metrics

    names = tasks.output_names(task, meta)
    p = tasks.encode_target(pred, task, meta)
    if tasks.activation(task) == "softmax":
        p = torch.nn.functional.one_hot(p[0].long(), len(names)).movedim(-1, 0)
    return case_metrics(p.float() * 2 - 1, tasks.encode_target(truth, task, meta), task, names, spacing)


def split_for(store: str, folds: int, seed: int) -> dict[str, list[str]]:
    """voxray's split for `seed` (the one every voxray arm of that seed trains and validates on)."""
    from voxray.platform.specs.train import ValidationSpec
    from voxray.preprocessing.store import Store
    from voxray.training.data import load_or_make_split

    return load_or_make_split(Path(tempfile.mkdtemp()) / "split.json", Store.open(store),
                              ValidationSpec(folds=folds, fold=0), seed)


class NnUNetArm:
    """One dataset's nnU-Net arm: raw data written once, then `run(seed)` per seed (nnU-Net preprocesses once)."""

    def __init__(self, tmp: Path, key: str, layout: str, root: Path, store: str, task: str, folds: int,
                 budget: float, dataset_id: int) -> None:
        import peers
        from voxray.preprocessing.store import Store

        self.python = peers.peer_python()
        self.version = peers.peer_version()
        self.work, self.store, self.task, self.folds, self.budget = tmp / f"nnunet-{key}", store, task, folds, budget
        self.dataset_id = dataset_id
        self.meta = Store.open(store).metadata()
        self.name, self.cases = write_raw(root, layout, self.work, dataset_id)
        self.preprocess: dict | None = None

    def run(self, seed: int) -> dict:
        split = split_for(self.store, self.folds, seed)
        req = {"dataset_id": self.dataset_id, "dataset_name": self.name, "budget_seconds": self.budget,
               "train": split["train"], "val": split["val"],
               **{k: str(self.work / k) for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
        request, reply, log = (self.work / f"request-{seed}.json", self.work / f"reply-{seed}.json",
                               self.work / f"peer-{seed}.log")
        request.write_text(json.dumps(req))
        with open(log, "wb") as f:
            rc = subprocess.run([str(self.python), str(HERE / "_nnunet_train_peer.py"), str(request), str(reply)],
                                stdout=f, stderr=subprocess.STDOUT, env=_peer_env()).returncode
        if rc != 0:
            raise RuntimeError(f"nnU-Net peer failed (rc {rc}): {log.read_text()[-3000:]}")
        out = json.loads(reply.read_text())
        self.preprocess = out.get("preprocess") or self.preprocess
        return {"rows": self._score(Path(out["predictions"]), split["val"]), "plan": out["plan"], "train": out["train"],
                "validate": out["validate"], "wall_seconds": out["train"]["wall_seconds"],
                "cpu_seconds": out["train"]["cpu_seconds"]}

    def _score(self, folder: Path, val: list[str]) -> list[dict]:
        import nibabel as nib

        from voxray.training.metrics import MetricAccumulator

        acc = MetricAccumulator(prefix="")
        for case in val:
            spacing, label = self.cases[case]
            pred = np.asarray(nib.load(folder / f"{case}.nii.gz").dataobj).astype(np.uint8)
            truth = np.asarray(nib.load(label).dataobj).astype(np.uint8)
            acc.add(score_label_maps(pred, truth, self.task, self.meta, spacing))
        m = acc.aggregate()
        names = [k[len("dice_"):] for k in m if k.startswith("dice_") and k != "dice_mean"] + ["mean"]
        return [{"output": n, "model_dice": round(m[f"dice_{n}"], 4), "hd95": round(m[f"hd95_{n}"], 3)}
                for n in names]


def _peer_env() -> dict[str, str]:
    import peers

    return {**peers._env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

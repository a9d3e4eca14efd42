"""A small trained model for the viewer's end-to-end test (imported by name): synthetic MSD-BraTS cases
(`voxray synth`'s phantom), preprocessed by the serving transform chain, a MONAI UNet fitted for a few seconds of
CPU with plain PyTorch, exported to a registry folder like any trained model."""

from __future__ import annotations

import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

SHAPE = (48, 48, 40)
PATCH = 32
LABELS = {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"}


def card(channels: list[str]) -> dict:
    from voxray.preprocessing.transforms import TransformConfig

    return {"model": {"name": "unet", "channels": [8, 16], "num_res_units": 0}, "spatial_dims": 3,
            "patch": [PATCH] * 3, "in_channels": len(channels), "channels": channels, "out_channels": len(LABELS),
            "task": "labels", "labels": dict(LABELS), "label_encoding": "index", "regions": None,
            "slice_axis": None, "preprocess": TransformConfig().to_dict(), "metrics": {}, "source": {"run": "tests"}}


def _cases(root: Path, cases: int, seed: int) -> list:
    from voxray.preprocessing.datasets import get_adapter
    from voxray.preprocessing.synth import synth_dataset

    synth_dataset("msd_brats", root, cases=cases, seed=seed, shape=SHAPE, difficulty=1)
    return get_adapter("msd_brats").discover(root)


def train_small_model(work: Path, steps: int = 80) -> tuple[Path, Path, Path]:
    """(registry version folder, a held-back case's 4D image, its label) — the model trained on other cases."""
    from voxray.preprocessing.datasets import Volume
    from voxray.preprocessing.transforms import TransformConfig, preprocess_volume
    from voxray.training.registry import build_from_card, export_model

    train = _cases(work / "train", 4, seed=0)
    held = _cases(work / "held", 1, seed=4242)[0]
    channels = ["FLAIR", "T1w", "t1gd", "T2w"]
    data = []
    for c in train:
        img = nib.load(c.images["image"])
        vol = Volume(image=np.moveaxis(np.asarray(img.dataobj, np.float32), -1, 0),
                     label=np.asarray(nib.load(c.label).dataobj, np.uint8), affine=img.affine, channels=tuple(channels))
        pre = preprocess_volume(vol, TransformConfig())
        pad = [(0, max(0, PATCH - s)) for s in pre.label.shape]
        data.append((np.pad(pre.image, [(0, 0), *pad]), np.pad(pre.label, pad)))
    spec = card(channels)
    torch.manual_seed(0)
    net = build_from_card(spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    weight = torch.tensor([0.2, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(2):
            image, label = data[rng.integers(len(data))]
            o = [rng.integers(0, s - PATCH + 1) for s in label.shape]
            sl = tuple(slice(a, a + PATCH) for a in o)
            xs.append(image[(slice(None), *sl)])
            ys.append(label[sl])
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.int64))
        loss = torch.nn.functional.cross_entropy(net(x), y, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    spec["source"]["train_s"] = round(time.perf_counter() - start, 1)
    net.eval()
    return export_model(net, spec, work / "registry", "viewer-e2e"), Path(held.images["image"]), Path(held.label)

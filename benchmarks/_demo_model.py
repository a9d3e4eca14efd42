"""The demo Swin Factorizer (untrained) exported to a registry: the network the predict and serve benchmarks time.
Speed does not depend on the weights, so one card serves both; `benchmark` only labels the card's source."""

from __future__ import annotations

from pathlib import Path

CHANNELS = ["FLAIR", "T1w", "t1gd", "T2w"]
# the demo recipe's network (examples/jobs/pipeline_demo.yaml), BraTS 4 → 3 regions, 32³ windows
MODEL = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4, "mlp_ratio": 2}


def make_model(root: Path, name: str = "demo", seed: int = 0, benchmark: str = "predict") -> Path:
    import torch

    from voxray.preprocessing.transforms import TransformConfig
    from voxray.training.registry import build_from_card, export_model

    card = {"model": MODEL, "spatial_dims": 3, "patch": [32, 32, 32], "in_channels": 4, "channels": CHANNELS,
            "out_channels": 3, "task": "brats_regions",
            "labels": {0: "background", 1: "edema", 2: "non-enhancing tumour", 3: "enhancing tumour"},
            "label_encoding": "index", "regions": {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]},
            "preprocess": TransformConfig().to_dict(), "restrict_to_nonzero": True, "metrics": {},
            "source": {"benchmark": benchmark}}
    torch.manual_seed(seed)
    return export_model(build_from_card(card), card, root / "registry", name)

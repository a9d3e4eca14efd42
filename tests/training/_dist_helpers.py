"""Spawn targets for multi-rank tests (a module of its own, so torch.multiprocessing's children can import it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPEC = dict(store="unused", task="brats_regions", model={"name": "unet", "channels": [4, 8], "num_res_units": 0},
            patch=[16, 16, 16], batch_size=2, validation={"every": 1, "folds": 2, "max_cases": None, "overlap": 0.25},
            tracking={"mlflow": False})
VAL_CASES = 5
"""An odd count: rank 0 gets three cases, rank 1 two."""


def setup(weights: Path):
    """(model, store, spec, meta, train ids, val ids): the same on every rank (weights loaded from one file)."""
    from voxray.platform.specs.train import TrainSpec
    from voxray.training.loop import build_network

    from _train_helpers import make_fake_store

    spec = TrainSpec(**SPEC)
    store = make_fake_store(VAL_CASES + 2, shape=(16, 16, 16))
    meta = store.metadata()
    model = build_network(spec, in_channels=4, out_channels=3)
    model.load_state_dict(torch.load(weights))
    ids = store.case_ids()
    return model.eval(), store, spec, meta, ids[:2], ids[2:]


def validate_all(rank: int, world: int, weights: Path, overlays: Path | None = None) -> dict:
    """Model and baseline validation of this rank's share, plus the progress calls this rank made."""
    from voxray.training.validation import validate, validate_baseline

    model, store, spec, meta, train_ids, val_ids = setup(weights)
    calls: list[tuple[int, int]] = []
    val = validate(model, store, val_ids, spec, meta, channels=None, device=torch.device("cpu"), rank=rank,
                   world=world, overlay_dir=overlays, on_case=lambda done, total: calls.append((done, total)))
    base = validate_baseline(store, train_ids, val_ids, spec, meta, channels=None, rank=rank, world=world)
    return {"val": val, "baseline": base, "calls": calls}


def rank_main(rank: int, world: int, init_file: str, weights: str, out: str) -> None:
    """torch.multiprocessing.spawn target: one gloo rank; writes its result to `<out>/rank<N>.json`."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        overlays = Path(out) / f"overlays{rank}"
        result = validate_all(rank, world, Path(weights), overlays)
        result["overlays"] = sorted(p.name for p in overlays.glob("*.png"))
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()

"""Training state ↔ checkpoint directories, and the two ways of reporting them.

A checkpoint is a folder with `state.pt` (model weights of the unwrapped module, optimizer, scheduler, step,
RNG states, every rank's sampler state, last validation metrics) and `metrics.json`. `RayReporter` hands it to
Ray Train (`ray.train.report`; keep-best via CheckpointConfig; restore via `ray.train.get_checkpoint`),
`LocalReporter` keeps the same folders under `<run_dir>/checkpoints/` for in-process runs and tests.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

__all__ = ["unwrap", "capture_state", "save_state", "load_state", "rng_state", "set_rng_state",
           "LocalReporter", "RayReporter"]

STATE_FILE = "state.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (what is saved and exported)."""
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def capture_state(model: nn.Module, optimizer, scheduler, step: int, **extra: Any) -> dict:
    """Everything a resume needs (extra: sampler states, best metric, last validation …)."""
    return {"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "rng": rng_state(), **extra}


def save_state(state: Mapping[str, Any], folder: Path, metrics: Mapping[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state), folder / STATE_FILE)
    (folder / "metrics.json").write_text(json.dumps(dict(metrics), indent=1, default=float))
    return folder


def load_state(folder: str | Path) -> dict:
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


class LocalReporter:
    """Checkpoints in `<run_dir>/checkpoints/step_XXXXXXX`, keeping the latest and the `keep` best by `metric`."""

    def __init__(self, run_dir: Path, *, keep: int = 2, metric: str = "val/dice_mean", mode: str = "max") -> None:
        self.root = Path(run_dir) / "checkpoints"
        self.keep, self.metric, self.mode = keep, metric, mode
        self.history: list[dict] = []

    def _folders(self) -> list[Path]:
        return sorted(p for p in self.root.glob("step_*") if (p / STATE_FILE).exists())

    def latest(self) -> Path | None:
        folders = self._folders()
        return folders[-1] if folders else None

    def best(self) -> Path | None:
        scored = [(json.loads((p / "metrics.json").read_text()).get(self.metric), p) for p in self._folders()]
        scored = [(v, p) for v, p in scored if v is not None and np.isfinite(v)]
        if not scored:
            return self.latest()
        return (max if self.mode == "max" else min)(scored, key=lambda vp: vp[0])[1]

    def restore_dir(self) -> Path | None:
        return self.latest()

    def report(self, metrics: Mapping[str, Any], state: Mapping[str, Any] | None, rank: int = 0) -> None:
        self.history.append(dict(metrics))
        if state is None or rank != 0:
            return
        save_state(state, self.root / f"step_{int(state['step']):07d}", metrics)
        self._prune()

    def _prune(self) -> None:
        folders = self._folders()
        scored = []
        for p in folders:
            v = json.loads((p / "metrics.json").read_text()).get(self.metric)
            scored.append((v if v is not None and np.isfinite(v) else None, p))
        ranked = sorted([s for s in scored if s[0] is not None], key=lambda s: s[0], reverse=self.mode == "max")
        keep = {p for _, p in ranked[: self.keep]} | {folders[-1]}
        for p in folders:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)


class RayReporter:
    """`ray.train.report` with a checkpoint from rank 0 (others report metrics only); restore from Ray."""

    def restore_dir(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        local = Path(ckpt.path)
        if (local / STATE_FILE).exists():  # local or shared filesystem: read in place, no copy
            return local
        return Path(ckpt.to_directory(tempfile.mkdtemp(prefix="voxray-restore-")))

    def report(self, metrics: Mapping[str, Any], state: Mapping[str, Any] | None, rank: int = 0) -> None:
        import ray.train

        clean = {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
        if state is None or rank != 0:
            ray.train.report(clean)
            return
        with tempfile.TemporaryDirectory(prefix="voxray-ckpt-") as tmp:
            save_state(state, Path(tmp), clean)
            ray.train.report(clean, checkpoint=ray.train.Checkpoint.from_directory(tmp))

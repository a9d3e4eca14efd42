"""Sliding-window inference on whole volumes: validation, `voxray predict` and serving all run through here.

A thin layer over MONAI's `sliding_window_inference` (Gaussian blend): it picks the first head of deep-supervision
outputs, runs 2D models slice by slice over a 3D volume, applies autocast (`autocast`, the one helper training and
inference share), mirror test-time augmentation inside each window (as nnU-Net: the window's flipped copies go
through the network and are flipped back, so the window loop and blending are paid once), and reports windows done
to a progress callback. MONAI pads volumes smaller than the window (zeros), so models with a fixed input size
(positional embeddings) always see exactly the window.
"""

from __future__ import annotations

import itertools
import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

__all__ = ["sliding_window_predict", "predict_windows", "WindowOutput", "first_head", "autocast", "amp_dtype",
           "mirror_members", "count_windows"]

Progress = Callable[[int, int], None]
"""progress(windows_done, windows_total), called after every forward pass."""


def first_head(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The full-resolution logits of a model that may return a deep-supervision list [full, 1/2, 1/4, …]."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


def amp_dtype(device: torch.device | str, precision: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`, or None for fp32.

    auto/bf16 → bfloat16 and fp16 → float16 on CUDA only: on CPU they run fp32 (a GPU spec runs unchanged in CI).
    """
    if torch.device(device).type != "cuda":
        return None
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(device: torch.device | str, precision: str) -> ContextManager:
    """The autocast context of training steps, validation and prediction (see `amp_dtype`)."""
    dtype = amp_dtype(device, precision)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else nullcontext()


def mirror_members(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every subset of the mirror `axes`, the identity first: the 2**len(axes) TTA members."""
    axes = sorted(set(int(a) for a in axes))
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def count_windows(shape: Sequence[int], window: Sequence[int], overlap: float) -> int:
    """Windows MONAI's sliding window visits over one image of spatial `shape` (its scan rule, for progress/ETA)."""
    total = 1
    for size, win in zip(shape, window):
        size = max(int(size), int(win))  # MONAI pads up to the window
        step = int(win) if win == size else max(int(win * (1 - overlap)), 1)
        n = next((d for d in range(math.ceil(size / step)) if d * step + win >= size), 0)
        total *= n + 1
    return total


class _Windows:
    """The callable MONAI slides: first head, autocast, mirror members averaged; optional member variance.

    Output channels: the member-mean logits (K), then — with `variance_task` — the members' probability variance
    within the window (K), which the blend averages like the logits (so windows' disagreement with each other, from
    their different borders, is not counted as TTA variance).
    """

    def __init__(self, model: nn.Module, precision: str, device: torch.device, mirror: Sequence[int],
                 variance_task: str | None, on_windows: Callable[[int], None] | None) -> None:
        self.model, self.precision, self.device = model, precision, device
        self.members = mirror_members(mirror)
        self.variance_task = variance_task if len(self.members) > 1 else None
        self.on_windows = on_windows

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from voxray.training.tasks import activate

        logits = probs = squares = None
        for axes in self.members:
            dims = [a + 2 for a in axes]
            with autocast(self.device, self.precision):
                y = first_head(self.model(x.flip(dims) if dims else x))
            y = y.float().flip(dims) if dims else y.float()
            logits = y if logits is None else logits + y
            if self.variance_task is not None:
                p = activate(y, self.variance_task, dim=1)
                probs = p if probs is None else probs + p
                squares = p * p if squares is None else squares + p * p
        n = len(self.members)
        out = logits / n if n > 1 else logits
        if self.variance_task is not None:
            mean = probs / n
            out = torch.cat([out, (squares / n - mean * mean).clamp_(min=0.0)], dim=1)
        if self.on_windows is not None:
            self.on_windows(int(x.shape[0]))
        return out


@dataclass
class WindowOutput:
    """Blended logits (B, K, *S) on the CPU and, with mirror TTA and `variance_task`, the TTA members' probability
    variance (B, K, *S), blended like the logits."""

    logits: torch.Tensor
    variance: torch.Tensor | None = None


@torch.no_grad()
def predict_windows(model: nn.Module, images: torch.Tensor, window: Sequence[int], overlap: float = 0.5, *,
                    batch: int = 1, device: torch.device | str | None = None, precision: str = "fp32",
                    mirror: Sequence[int] = (), variance_task: str | None = None, mode: str = "gaussian",
                    progress: Progress | None = None) -> WindowOutput:
    """Sliding-window logits for same-shape images (B, C, *S); windows of every image share forward passes.

    `window` has as many dims as the model: a 2D window with 3D images predicts each slice along the first spatial
    axis. `mirror` lists the model-grid spatial axes whose flips are averaged (TTA). `mode` is MONAI's blend mode
    (`gaussian` or `constant`). The model is put in eval mode; the caller restores train mode.
    """
    if images.ndim not in (4, 5):
        raise ValueError(f"images must be (B, C, *S) with 2 or 3 spatial dims, got shape {tuple(images.shape)}")
    if len(window) not in (2, 3) or (len(window) == 3 and images.ndim != 5):
        raise ValueError(f"window {list(window)} does not fit an image of shape {tuple(images.shape[1:])}")
    if any(a >= len(window) for a in mirror):
        raise ValueError(f"mirror axes {list(mirror)} do not exist in a {len(window)}D window")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    b = images.shape[0]
    slicewise = len(window) == 2 and images.ndim == 5
    x = images.to(device=device, dtype=torch.float32)
    if slicewise:  # (B, C, Z, Y, X) → (B·Z, C, Y, X): slices are the batch
        z = x.shape[2]
        x = x.transpose(1, 2).reshape(b * z, x.shape[1], *x.shape[3:])
    total = x.shape[0] * count_windows(x.shape[2:], window, overlap)
    done = [0]

    def on_windows(n: int) -> None:
        done[0] += n
        progress(min(done[0], total), total)

    fn = _Windows(model, precision, device, mirror, variance_task, on_windows if progress is not None else None)
    out = sliding_window_inference(x, list(window), max(batch, 1), fn, overlap=overlap, mode=mode)
    if slicewise:
        out = out.reshape(b, z, out.shape[1], *out.shape[2:]).transpose(1, 2)
    out = out.float().cpu()
    if fn.variance_task is None:
        return WindowOutput(out)
    k = out.shape[1] // 2
    return WindowOutput(out[:, :k].contiguous(), out[:, k:].contiguous())


def sliding_window_predict(model: nn.Module, image: torch.Tensor, patch: Sequence[int], overlap: float = 0.5, *,
                           mode: str = "gaussian", sw_batch_size: int = 1, device: torch.device | str | None = None,
                           amp: bool = False, precision: str | None = None, mirror: Sequence[int] = (),
                           progress: Progress | None = None) -> torch.Tensor:
    """Logits (K, *S) for one image (C, *S) (see `predict_windows`); `precision` wins over the older `amp` flag."""
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (C, *S) with 2 or 3 spatial dims, got shape {tuple(image.shape)}")
    if len(patch) not in (2, 3) or (len(patch) == 3 and image.ndim != 4):
        raise ValueError(f"patch {list(patch)} does not fit an image of shape {tuple(image.shape)}")
    prec = precision or ("auto" if amp else "fp32")
    return predict_windows(model, image[None], patch, overlap, batch=sw_batch_size, device=device, precision=prec,
                           mirror=mirror, mode=mode, progress=progress).logits[0]

"""Sliding-window inference on whole volumes (validation and serving share it).

A thin layer over MONAI's `sliding_window_inference`: it picks the first head of deep-supervision outputs, runs
2D models slice by slice over a 3D volume, and applies bf16 autocast on GPU. MONAI pads volumes smaller than the
window (zeros), so models with a fixed input size (positional embeddings) always see exactly `patch`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from monai.inferers import sliding_window_inference
from torch import nn

__all__ = ["sliding_window_predict", "first_head"]


def first_head(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The full-resolution logits of a model that may return a deep-supervision list [full, 1/2, 1/4, …]."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


class _FirstHead(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return first_head(self.model(x)).float()


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def sliding_window_predict(model: nn.Module, image: torch.Tensor, patch: Sequence[int], overlap: float = 0.5, *,
                           mode: str = "gaussian", sw_batch_size: int = 1, device: torch.device | str | None = None,
                           amp: bool = False) -> torch.Tensor:
    """Logits (K, *S) for one image (C, *S) on `device` (default: the model's device).

    `patch` has as many dims as the model: a 2D `patch` with a 3D image predicts each slice along the first
    spatial axis (batched `sw_batch_size` slices at a time). `mode` is MONAI's blend mode (`gaussian` or
    `constant`). The model is put in eval mode; the caller restores train mode.
    """
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (C, *S) with 2 or 3 spatial dims, got shape {tuple(image.shape)}")
    if len(patch) not in (2, 3) or (len(patch) == 3 and image.ndim != 4):
        raise ValueError(f"patch {list(patch)} does not fit an image of shape {tuple(image.shape)}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.eval()
    predictor = _FirstHead(model)
    slicewise = len(patch) == 2 and image.ndim == 4
    x = image.to(device=device, dtype=torch.float32)
    x = x.permute(1, 0, 2, 3) if slicewise else x.unsqueeze(0)  # (Z, C, Y, X) slices or (1, C, *S)
    batch = max(sw_batch_size, 1)
    with _autocast(device, amp):
        if slicewise:
            outs = [sliding_window_inference(x[i:i + batch], list(patch), batch, predictor, overlap=overlap,
                                             mode=mode) for i in range(0, x.shape[0], batch)]
            return torch.cat(outs).permute(1, 0, 2, 3).float()  # (K, Z, Y, X)
        out = sliding_window_inference(x, list(patch), batch, predictor, overlap=overlap, mode=mode)
    return out[0].float()

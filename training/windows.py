"""Sliding windows over images of different shapes sharing forward passes (Serve's cross-request batching).

`inference.predict_windows` hands MONAI one (B, C, *S) tensor, so only images of one shape can share forward passes;
requests to a server are cropped to their own nonzero box and almost never match. Here each image gets MONAI's own
scan — padding up to the window, scan interval, `dense_patch_slices`, importance map — and the windows of all images
are queued together and cut into forward passes of `batch` windows; every output window is weighted and added back
into its own image, which is then divided by its weight sum and un-padded, as MONAI does. Per image the result equals
`predict_windows` on that image alone (to float rounding); TTA members, variance and autocast are the same
`inference._Windows` callable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from voxray.training.inference import Progress, WindowOutput, _Windows

__all__ = ["predict_windows_mixed", "window_plan"]


@dataclass
class _Image:
    """One image on the window scan: padded input (1, C, *P), its windows, and MONAI's padding to undo."""

    x: torch.Tensor
    slices: list[tuple[slice, ...]]
    crop: tuple[slice, ...]
    out: torch.Tensor | None = None
    count: torch.Tensor | None = None


def window_plan(image: torch.Tensor, window: Sequence[int], overlap: float) -> _Image:
    """MONAI's scan of one (C, *S) image: zero padding up to the window (split as MONAI splits it) and the windows."""
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    size = list(image.shape[1:])
    roi = [int(w) for w in window]
    pad: list[int] = []
    for k in range(len(size) - 1, -1, -1):  # F.pad order: last axis first
        diff = max(roi[k] - size[k], 0)
        pad += [diff // 2, diff - diff // 2]
    x = image[None]
    if any(pad):
        x = F.pad(x, pad, mode="constant", value=0.0)
    padded = tuple(max(s, r) for s, r in zip(size, roi))
    interval = _get_scan_interval(padded, roi, len(roi), (overlap,) * len(roi))
    slices = [tuple(s) for s in dense_patch_slices(padded, roi, interval, return_slice=True)]
    lo = [pad[2 * (len(size) - 1 - i)] for i in range(len(size))]
    crop = tuple(slice(a, a + s) for a, s in zip(lo, size))
    return _Image(x, slices, crop)


@torch.no_grad()
def predict_windows_mixed(model: nn.Module, images: Sequence[torch.Tensor], window: Sequence[int],
                          overlap: float = 0.5, *, batch: int = 1, device: torch.device | str | None = None,
                          precision: str = "fp32", mirror: Sequence[int] = (), variance_task: str | None = None,
                          mode: str = "gaussian", progress: Progress | None = None) -> list[WindowOutput]:
    """Sliding-window logits for 3D images (C, *S_i) of any shapes; windows of all images share forward passes of
    `batch` windows. Same arguments and per-image results as `inference.predict_windows` (3D windows only)."""
    from monai.data.utils import compute_importance_map

    if any(img.ndim != len(window) + 1 for img in images) or len(window) != 3:
        raise ValueError(f"predict_windows_mixed takes (C, Z, Y, X) images and a 3D window, got window "
                         f"{list(window)} and shapes {[tuple(i.shape) for i in images]}")
    if any(a >= len(window) for a in mirror):
        raise ValueError(f"mirror axes {list(mirror)} do not exist in a {len(window)}D window")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    plans = [window_plan(img.to(dtype=torch.float32), window, overlap) for img in images]
    weight = compute_importance_map(tuple(int(w) for w in window), mode=mode, sigma_scale=0.125, device="cpu",
                                    dtype=torch.float32)
    queue = [(i, s) for i, p in enumerate(plans) for s in p.slices]
    done = [0]

    def on_windows(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(min(done[0], len(queue)), len(queue))

    fn = _Windows(model, precision, device, mirror, variance_task, on_windows)
    for start in range(0, len(queue), max(batch, 1)):
        part = queue[start:start + max(batch, 1)]
        x = torch.cat([plans[i].x[(slice(None), slice(None), *s)] for i, s in part]).to(device)
        y = fn(x).float().cpu()
        for (i, s), yi in zip(part, y):
            p = plans[i]
            if p.out is None:
                p.out = torch.zeros((y.shape[1], *p.x.shape[2:]))
                p.count = torch.zeros((1, *p.x.shape[2:]))
                for t in p.slices:
                    p.count[(slice(None), *t)] += weight
            p.out[(slice(None), *s)] += yi * weight
    outs = []
    for p in plans:
        assert p.out is not None and p.count is not None
        logits = (p.out / p.count)[(slice(None), *p.crop)].contiguous()
        if fn.variance_task is None:
            outs.append(WindowOutput(logits))
        else:
            k = logits.shape[0] // 2
            outs.append(WindowOutput(logits[:k].contiguous(), logits[k:].contiguous()))
    return outs

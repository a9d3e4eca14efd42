"""One renderer for label-overlay PNGs (`voxray store preview`, training's validation overlays, the demo's
prediction overlay): axial slices shown the way the browser viewer shows them — anterior up, the patient's right on
the screen's left (radiological convention; `neurological` mirrors it) — with per-class colours shared with the
viewer (serving/static/views.js) and R/L/A/P markers at the edges.

Slices come in RAS order: `ras_volume` turns a NIfTI array + affine into it (nearest axis order, as nibabel's
`io_orientation`); a stored case is RAS already ((Z, Y, X) = S, A, R; see `stored_axial`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np

Convention = Literal["radiological", "neurological"]
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40))
"""Class k → PALETTE[(k - 1) % 12]; the viewer's views.js holds the same list (a test keeps them equal)."""


def class_colour(k: int) -> tuple[int, int, int]:
    return PALETTE[(int(k) - 1) % len(PALETTE)]


def ras_volume(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """`data` (I, J, K, ...) reordered and flipped so its first three axes run toward R, A and S."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    return nib.orientations.apply_orientation(np.asarray(data), ornt)


def axial_display(plane_xy: np.ndarray, convention: Convention = "radiological") -> np.ndarray:
    """An axial RAS plane indexed (x → R, y → A) as screen rows/columns: anterior at the top; the patient's right on
    the left (radiological) or on the right (neurological)."""
    rows = np.asarray(plane_xy).T[::-1]  # rows: y from A (top) to P; columns: x from L to R
    return rows[:, ::-1] if convention == "radiological" else rows


def stored_axial(plane_yx: np.ndarray, convention: Convention = "radiological") -> np.ndarray:
    """An axial slice of a stored case (rows y → A, columns x → R) as screen rows/columns (see `axial_display`)."""
    return axial_display(np.asarray(plane_yx).T, convention)


def axial_markers(convention: Convention = "radiological") -> dict[str, str]:
    """Letters at the left, right, top and bottom edges of an axial view."""
    left, right = ("R", "L") if convention == "radiological" else ("L", "R")
    return {"left": left, "right": right, "top": "A", "bottom": "P"}


def colour_mask(mask: np.ndarray, alpha: float = 0.5, bitmask: bool = False) -> np.ndarray:
    """RGBA (H, W, 4) floats of a label slice: each class in its palette colour, background transparent."""
    m = np.asarray(mask).astype(np.int64)
    if bitmask:  # overlapping classes: show the highest set bit
        m = np.where(m > 0, np.floor(np.log2(np.maximum(m, 1))).astype(np.int64) + 1, 0)
    rgba = np.zeros((*m.shape, 4), dtype=np.float32)
    for k in np.unique(m[m > 0]):
        rgba[m == k] = (*[c / 255 for c in class_colour(k)], alpha)
    return rgba


def draw_markers(ax, convention: Convention = "radiological") -> None:
    """R/L/A/P at the edges of an axes showing an axial view."""
    style = dict(color="white", fontsize=9, fontweight="bold", ha="center", va="center",
                 bbox=dict(boxstyle="round,pad=0.15", fc="black", ec="none", alpha=0.6))
    m = axial_markers(convention)
    for key, (x, y) in {"left": (0.04, 0.5), "right": (0.96, 0.5), "top": (0.5, 0.96), "bottom": (0.5, 0.04)}.items():
        ax.text(x, y, m[key], transform=ax.transAxes, **style)


def render_axial(image: np.ndarray, masks: Sequence[tuple[np.ndarray | None, str]], out: str | Path,
                 title: str = "", convention: Convention = "radiological", alpha: float = 0.5,
                 bitmask: bool = False, panel_size: float = 4.0, dpi: int = 100) -> Path:
    """PNG with one panel per (mask, caption): the axial `image` slice in grey, the mask in class colours, markers.

    `image` and the masks are already in screen order (`axial_display` / `stored_axial`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = np.asarray(image, dtype=np.float32)
    body = img[img != 0]
    lo, hi = (np.percentile(body, [0.5, 99.5]) if body.size else (0.0, 1.0))
    fig, axes = plt.subplots(1, len(masks), figsize=(panel_size * len(masks), panel_size + 0.4), squeeze=False)
    for ax, (mask, caption) in zip(axes[0], masks):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        if mask is not None and np.any(mask):
            ax.imshow(colour_mask(mask, alpha, bitmask), interpolation="nearest")
        draw_markers(ax, convention)
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


__all__ = ["PALETTE", "class_colour", "ras_volume", "axial_display", "stored_axial", "axial_markers", "colour_mask",
           "draw_markers", "render_axial"]

"""`voxray store preview`: one axial slice of a stored case with its label overlaid and R/L/A/P markers, as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxray.platform.errors import DataError
from voxray.preprocessing.overlay import Convention, render_axial, stored_axial
from voxray.preprocessing.store.reader import Store


def pick_slice(label: np.ndarray | None, depth: int) -> int:
    """The slice with the most labelled voxels, else the middle one."""
    if label is None or not np.any(label):
        return depth // 2
    return int(np.argmax((label != 0).reshape(label.shape[0], -1).sum(axis=1)))


def preview_png(store: Store, case_id: str, out: str | Path, slice_index: int | None = None,
                channel: int = 0, convention: Convention = "radiological") -> Path:
    """Render channel `channel` of axial slice `slice_index` (default: most foreground) with the label on top, in
    the viewer's orientation (anterior up, radiological unless `convention` says neurological) with R/L/A/P markers."""
    image = store.image(case_id)
    if not 0 <= channel < image.shape[0]:
        raise DataError(f"channel {channel} is out of range: {case_id} has {image.shape[0]} channels")
    label_arr = store.label(case_id)
    label = None if label_arr is None else np.asarray(label_arr[...])
    depth = image.shape[1]
    z = pick_slice(label, depth) if slice_index is None else slice_index
    if not 0 <= z < depth:
        raise DataError(f"--slice {z} is out of range: {case_id} has {depth} axial slices (0..{depth - 1})")
    plane = stored_axial(np.asarray(image[channel, z], dtype=np.float32), convention)
    mask = None if label is None else stored_axial(label[z], convention)
    name = store.channels[channel] if channel < len(store.channels) else str(channel)
    return render_axial(plane, [(mask, f"{case_id}  {name}  z={z}/{depth - 1}")], out, convention=convention,
                        bitmask=store.label_encoding == "bitmask", panel_size=5.0)

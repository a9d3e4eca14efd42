"""Writing synthetic NIfTI files the way the real datasets store them (dtype, affine codes, units)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, dtype: str | np.dtype) -> Path:
    """Write `data` as `dtype` with sform/qform code 1 (scanner) and mm units; gzip level 1 keeps tests fast."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def to_scanner_units(image: np.ndarray, scale: float) -> np.ndarray:
    """Relative phantom intensities → scanner-like non-negative values."""
    return np.clip(image * scale, 0.0, None)

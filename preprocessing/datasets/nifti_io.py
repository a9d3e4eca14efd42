"""NIfTI decoding shared by the NIfTI layouts: every failure becomes a CaseError naming the file and the reason."""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from voxray.preprocessing.datasets.base import CaseError

log = logging.getLogger(__name__)


def read_nifti(case_id: str, path: Path, ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Decode `path` as float32 with `ndim` dims (trailing singleton dims dropped, as IBSR's (X,Y,Z,1)) + its affine."""
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except FileNotFoundError:
        raise CaseError(case_id, path, "file not found") from None
    except Exception as exc:  # nibabel/gzip/zlib raise many types for truncated or corrupt files
        raise CaseError(case_id, path, f"cannot decode NIfTI ({type(exc).__name__}: {exc}); truncated or corrupt?") from None
    while data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != ndim:
        raise CaseError(case_id, path, f"expected a {ndim}D image, found shape {data.shape}")
    if not np.isfinite(data).all():
        raise CaseError(case_id, path, "image holds NaN or infinite values")
    return data, np.asarray(img.affine, dtype=np.float64)


def read_label(case_id: str, path: Path, allowed: set[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Decode a label map as uint8; non-integer values or values outside `allowed` are a CaseError."""
    data, affine = read_nifti(case_id, path, ndim=3)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise CaseError(case_id, path, "label map holds non-integer values")
    values = set(np.unique(rounded).astype(int).tolist())
    if allowed is not None and not values <= allowed:
        raise CaseError(case_id, path, f"label values {sorted(values - allowed)} are not in the label map {sorted(allowed)}")
    if min(values, default=0) < 0 or max(values, default=0) > 255:
        raise CaseError(case_id, path, f"label values {sorted(values)} do not fit uint8")
    return rounded.astype(np.uint8), affine


def same_grid(shape_a, affine_a, shape_b, affine_b, atol: float = 1e-3) -> bool:
    """Two images share a voxel grid when shapes match and affines agree to `atol` mm."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(affine_a, affine_b, atol=atol)


def resample_to(data: np.ndarray, affine: np.ndarray, ref_shape, ref_affine: np.ndarray, order: int) -> np.ndarray:
    """Resample `data` onto the reference grid through world space (linear for images, nearest for labels)."""
    matrix = np.linalg.inv(affine) @ ref_affine  # reference voxel → source voxel
    out = ndimage.affine_transform(data, matrix[:3, :3], offset=matrix[:3, 3], output_shape=tuple(ref_shape),
                                   order=order, mode="constant", cval=0.0, prefilter=False)
    return out.astype(data.dtype, copy=False)


def stack_channels(case_id: str, files: dict[str, Path], reference: str, resample: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode one file per channel and stack (C, I, J, K) on the `reference` channel's grid.

    With `resample`, channels on another grid are resampled (linear) into it and the original grids are returned
    in the meta; without, a grid mismatch is a CaseError (co-registered layouts such as BraTS must match exactly).
    """
    ref_data, ref_affine = read_nifti(case_id, files[reference])
    grids: dict[str, dict] = {}
    arrays: list[np.ndarray] = []
    resampled: list[str] = []
    for name, path in files.items():
        data, affine = (ref_data, ref_affine) if name == reference else read_nifti(case_id, path)
        grids[name] = {"shape": list(data.shape), "affine": affine.tolist()}
        if not same_grid(data.shape, affine, ref_data.shape, ref_affine):
            if not resample:
                raise CaseError(case_id, path, f"grid {data.shape} differs from {reference} {ref_data.shape} "
                                               f"({files[reference].name}); images must be co-registered")
            data = resample_to(data, affine, ref_data.shape, ref_affine, order=1)
            resampled.append(name)
        arrays.append(data)
    meta = {"reference_grid": reference, "resampled": resampled, "native_grids": grids} if resampled else {}
    return np.stack(arrays), ref_affine, meta


def label_on_grid(case_id: str, path: Path, allowed: set[int] | None, ref_shape, ref_affine, resample: bool) -> np.ndarray:
    """Decode a label and bring it onto the image grid (nearest neighbour) when allowed."""
    label, affine = read_label(case_id, path, allowed)
    if same_grid(label.shape, affine, ref_shape, ref_affine):
        return label
    if not resample:
        raise CaseError(case_id, path, f"label grid {label.shape} differs from the image grid {tuple(ref_shape)}")
    return resample_to(label, affine, ref_shape, ref_affine, order=0)


def header_summary(path: Path) -> dict:
    """Shape, spacing and dtype from the header only (cheap, for `voxray inspect`)."""
    img = nib.load(str(path))
    zooms = img.header.get_zooms()
    return {"shape": list(img.shape), "spacing": [round(float(z), 4) for z in zooms[:3]],
            "dtype": str(img.get_data_dtype())}


def source_dtypes(paths: "list[Path] | tuple[Path, ...]") -> list[str]:
    """On-disk voxel dtypes of image files, read from their headers only: what a request sending the same kind of
    file will carry (the model card's training fingerprint; input QA compares with it). Non-NIfTI files (TIF, PNG)
    and unreadable headers are skipped."""
    found = set()
    for path in paths:
        try:
            found.add(str(nib.load(str(path)).get_data_dtype()))
        except Exception:  # not a NIfTI (stacked 2D layouts) or unreadable: no dtype to record
            continue
    return sorted(found)

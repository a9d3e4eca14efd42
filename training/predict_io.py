"""NIfTI in and out of prediction: decoding with errors that name the file, and outputs on the input's geometry.

Inputs are decoded once, here (a truncated .nii.gz fails while its voxels are read, so reading them is part of
loading and its error names the file). Outputs copy the input header's geometry and keep the input's exact shape:
an (X, Y, Z, 1) input gives an (X, Y, Z, 1) mask, so it compares with a label of the input's shape.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from voxray.platform.errors import DataError
from voxray.training.channels import match_channels

__all__ = ["InvalidInput", "load_images", "volume_from_images", "mask_image", "probabilities_image", "map_image",
           "reference_image", "PROBABILITY_SCALE"]

PROBABILITY_SCALE = 65535
"""Probabilities are written as uint16 × 1/65535 (scl_slope): NIfTI has no float16; this is float16's size with
finer steps (1.5e-5), and every reader's scaled data (get_fdata) gives the probabilities back."""


class InvalidInput(DataError):
    """Input images a model cannot take: unreadable, wrong dimensionality, mismatched grids, non-finite values."""


def load_images(inputs: Mapping[str, str | Path] | str | Path) -> Mapping[str, Any] | Any:
    """Decoded nibabel images (float32 in memory) from {modality: path} or one path (4D, or 3D for one channel).

    Any failure to read a file — missing, not NIfTI, truncated, corrupt gzip — is an `InvalidInput` naming it.
    """
    if isinstance(inputs, Mapping):
        return {name: _load(p) for name, p in inputs.items()}
    return _load(inputs)


def _load(p: str | Path) -> Any:
    import nibabel as nib

    path = Path(p)
    if not path.is_file():
        raise InvalidInput(f"input file {str(path)!r} does not exist")
    try:
        img = nib.load(str(path))
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel/gzip/zlib raise many types (EOFError for a truncated .nii.gz)
        reason = "the file ends early (truncated, or an incomplete download)" if isinstance(exc, EOFError) else (
            f"{type(exc).__name__}: {exc}".rstrip(": "))
        raise InvalidInput(f"{path}: not a readable NIfTI image: {reason}") from None
    return type(img)(data, img.affine, img.header)


def reference_image(images: Mapping[str, Any] | Any) -> Any:
    """The image whose geometry (shape, affine, header) the outputs copy: the first of several, or the only one."""
    return next(iter(images.values())) if isinstance(images, Mapping) else images


def volume_from_images(images: Mapping[str, Any] | Any, channels: Sequence[str]) -> Any:
    """A `Volume` from nibabel images: {modality: 3D image} (names matched to `channels`, aliases allowed) or one
    image, 4D with the channels in the model's order on the last axis (3D when the model has one channel).

    Every modality must share one voxel grid (shape and affine); nothing is resampled silently.
    """
    from voxray.preprocessing.datasets import Volume
    from voxray.preprocessing.datasets.nifti_io import same_grid

    if isinstance(images, Mapping):
        order = match_channels(list(images), list(channels))
        ref = images[order[0]]
        for name in order[1:]:
            img = images[name]
            if not same_grid(img.shape, img.affine, ref.shape, ref.affine):
                raise InvalidInput(f"modality {name!r} (shape {tuple(img.shape)}) is not on the grid of {order[0]!r} "
                                   f"(shape {tuple(ref.shape)}); all modalities must share shape and affine")
        data = np.stack([_as_3d(images[n], n) for n in order])
    else:
        ref = images
        data = _channels_first(images, len(channels))
    if not np.isfinite(data).all():
        raise InvalidInput("image holds NaN or infinite values")
    imgs = images.values() if isinstance(images, Mapping) else [images]
    dtypes = sorted({str(img.get_data_dtype()) for img in imgs if hasattr(img, "get_data_dtype")})
    return Volume(image=data, label=None, affine=np.asarray(ref.affine, dtype=np.float64), channels=tuple(channels),
                  meta={"dtypes": dtypes})  # on-disk voxel types, for input QA


def _as_3d(img: Any, name: str) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInput(f"modality {name!r} must be a 3D image, got shape {tuple(img.shape)}")
    return data


def _channels_first(img: Any, n_channels: int) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 3 and n_channels == 1:
        return data[None]
    if data.ndim == 4 and data.shape[3] == n_channels:
        return np.moveaxis(data, 3, 0) if n_channels > 1 else data[None, ..., 0]  # a view: reorienting copies
    raise InvalidInput(f"a single image must be 4D with {n_channels} channels on the last axis"
                       f"{' (or 3D)' if n_channels == 1 else ''}; got shape {tuple(img.shape)}")


def _like_shape(volume: np.ndarray, like: Any) -> np.ndarray:
    """`volume` (I, J, K) in the input's exact shape when that only adds singleton axes ((I, J, K, 1) stays so)."""
    shape = tuple(like.shape)
    if shape != volume.shape and shape[:3] == volume.shape and math.prod(shape[3:]) == 1:
        return volume.reshape(shape)
    return volume


def _image(data: np.ndarray, like: Any, dtype: Any, slope: float = 1.0) -> Any:
    import nibabel as nib

    nifti = isinstance(like, nib.Nifti1Image)  # Nifti2Image included
    cls = type(like) if nifti else nib.Nifti1Image
    header = like.header.copy() if nifti else None
    img = cls(data.astype(dtype, copy=False), like.affine, header)
    img.header.set_data_dtype(dtype)
    img.header.set_data_shape(data.shape)
    img.header.set_slope_inter(slope, 0.0)
    if data.ndim > 3:  # the 4th axis holds classes or maps, not time
        img.header.set_xyzt_units(xyz=img.header.get_xyzt_units()[0])
    return img


def mask_image(mask: np.ndarray, like: Any) -> Any:
    """A uint8 NIfTI of `mask` with the geometry (affine, qform/sform) and exact shape of the input image `like`."""
    return _image(_like_shape(np.asarray(mask), like), like, np.uint8)


def probabilities_image(probs: np.ndarray, like: Any) -> Any:
    """Class probabilities (K, I, J, K) → an (I, J, K, K) NIfTI, uint16 scaled by 1/PROBABILITY_SCALE."""
    data = np.moveaxis(np.asarray(probs, dtype=np.float32), 0, -1)
    quantised = np.rint(np.clip(data, 0.0, 1.0) * PROBABILITY_SCALE).astype(np.uint16)
    return _image(quantised, like, np.uint16, slope=1.0 / PROBABILITY_SCALE)


def map_image(maps: Sequence[np.ndarray], like: Any) -> Any:
    """Float32 voxel maps (each (I, J, K)) → one NIfTI: 3D in the input's exact shape for one map, else 4D."""
    data = _like_shape(np.asarray(maps[0], dtype=np.float32), like) if len(maps) == 1 else (
        np.stack([np.asarray(m, dtype=np.float32) for m in maps], -1))
    return _image(data, like, np.float32)

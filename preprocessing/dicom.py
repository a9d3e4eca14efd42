"""One DICOM series (single-frame images) → a float32 volume and its RAS affine, as dicom2nifti would give it.

Geometry comes from ImagePositionPatient / ImageOrientationPatient / PixelSpacing through highdicom
(`get_volume_from_series`: slices sorted along the normal, regular spacing checked, Modality LUT /
RescaleSlope/Intercept applied). The voxel order is then dicom2nifti's (column, row, slice) and the affine is turned
from DICOM's LPS patient frame into NIfTI's RAS, so a series and the NIfTI made from it give the same volume.

Every problem is a `DicomError` naming the file (or series) and the reason; its `status` is the HTTP code serving
answers with (400 not DICOM / unreadable, 413 too large, 415 no decoder, 422 unusable geometry or content).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from voxray.platform.errors import DataError

__all__ = ["DicomError", "Series", "check_series", "series_volume", "LPS_TO_RAS"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""DICOM's patient frame (x → left, y → posterior) to NIfTI's (x → right, y → anterior): flip x and y."""
ORIENTATION_TOL = 1e-4
"""Largest difference between two slices' direction cosines that still counts as one orientation."""


class DicomError(DataError):
    """A DICOM input that cannot be used; `status` is the HTTP status serving answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Series:
    """The datasets of one SeriesInstanceUID, with the file name of each (for error messages)."""

    uid: str
    datasets: list[Any]
    names: list[str]

    @property
    def description(self) -> str:
        """SeriesDescription (or ProtocolName), what channel matching and messages show."""
        ds = self.datasets[0]
        return str(ds.get("SeriesDescription") or ds.get("ProtocolName") or "")

    def label(self) -> str:
        return f"series {self.description or self.uid!r}" + (f" ({self.names[0]}…)" if self.names else "")


def _decoder_problem(ds: Any) -> str | None:
    """Why the pixel data of `ds` cannot be decoded here (compressed syntax without a plugin), else None."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or not syntax.is_compressed:
        return None
    try:
        available = get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        available = False
    if available:
        return None
    return (f"compressed transfer syntax {syntax.name} ({syntax}) has no decoder installed here; send uncompressed "
            "(Explicit VR Little Endian) or JPEG 2000 / JPEG-LS / RLE files")


def check_series(series: Series, max_dim: int, max_voxels: int) -> None:
    """Refuse a series before decoding any pixel: missing pixel data, undecodable syntax, multi-frame, mixed
    geometry, or a volume over the size limits."""
    rows_cols = set()
    for ds, name in zip(series.datasets, series.names):
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            raise DicomError(422, f"{name}: DICOM file has no pixel data (not an image; a report or structure?)")
        if int(ds.get("NumberOfFrames") or 1) > 1:
            raise DicomError(422, f"{name}: multi-frame DICOM images are not supported; send a classic series "
                                  "(one file per slice)")
        problem = _decoder_problem(ds)
        if problem:
            raise DicomError(415, f"{name}: {problem}")
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if ds.get(key) is None:
                raise DicomError(422, f"{name}: missing {key}; the volume's geometry cannot be known")
        rows_cols.add((int(ds.Rows), int(ds.Columns)))
    if len(rows_cols) > 1:
        raise DicomError(422, f"{series.label()}: slices of different sizes {sorted(rows_cols)} in one series")
    rows, cols = rows_cols.pop()
    largest = max(rows, cols, len(series.datasets))
    if largest > max_dim:
        raise DicomError(413, f"{series.label()}: image axis of {largest} voxels exceeds max_dim {max_dim}")
    if rows * cols * len(series.datasets) > max_voxels:
        raise DicomError(413, f"{series.label()}: {rows * cols * len(series.datasets)} voxels exceed max_voxels "
                              f"{max_voxels}")


def _normal(ds: Any) -> np.ndarray:
    """The slice normal in LPS: row direction × column direction (where NIfTI's third axis points)."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    return np.cross(iop[:3], iop[3:])


def sorted_datasets(series: Series) -> list[Any]:
    """The series' datasets along the slice normal (ascending), after checking orientation, pixel spacing and that
    the slices are evenly spaced (highdicom's check)."""
    from highdicom.spatial import get_series_volume_positions

    first = series.datasets[0]
    orientation = [float(v) for v in first.ImageOrientationPatient]
    for ds, name in zip(series.datasets, series.names):
        if not np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=ORIENTATION_TOL):
            raise DicomError(422, f"{name}: ImageOrientationPatient {list(ds.ImageOrientationPatient)} differs from "
                                  f"{series.names[0]}'s {orientation}: inconsistent orientation in {series.label()}")
        if not np.allclose([float(v) for v in ds.PixelSpacing], [float(v) for v in first.PixelSpacing]):
            raise DicomError(422, f"{name}: PixelSpacing differs from {series.names[0]}'s in {series.label()}")
    if len(series.datasets) == 1:
        return list(series.datasets)
    try:
        spacing, _ = get_series_volume_positions(series.datasets, orientation_tol=ORIENTATION_TOL)
    except ValueError as exc:
        raise DicomError(422, f"{series.label()}: {exc}") from None
    if spacing is None:
        raise DicomError(422, f"{series.label()}: inconsistent slice spacing (ImagePositionPatient values are not "
                              "evenly spaced along the slice normal: a gap, a duplicate slice or a localizer?)")
    normal = _normal(first)
    return sorted(series.datasets, key=lambda ds: float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])))


def series_volume(series: Series) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(float32 data (columns, rows, slices), 4×4 RAS affine, datasets in slice order) of one checked series."""
    from highdicom.image import get_volume_from_series

    ordered = sorted_datasets(series)
    try:
        volume = get_volume_from_series(ordered, dtype=np.float32, apply_voi_transform=False,
                                        orientation_tol=ORIENTATION_TOL)
    except Exception as exc:  # pydicom / highdicom raise many types for corrupt pixel data
        raise DicomError(422, f"{series.label()}: cannot decode the series ({type(exc).__name__}: {exc})") from None
    array = np.asarray(volume.array)
    if array.ndim != 3:
        raise DicomError(422, f"{series.label()}: expected grayscale slices, got pixel array shape {array.shape}")
    # highdicom indexes (slice, row, column) in LPS; dicom2nifti and NIfTI index (column, row, slice) in RAS
    lps = np.asarray(volume.affine, dtype=np.float64)
    data = array.transpose(2, 1, 0)
    affine = LPS_TO_RAS @ lps[:, [2, 1, 0, 3]]
    if len(ordered) > 1 and float(np.dot(lps[:3, 0], _normal(ordered[0]))) < 0:
        # highdicom stacks right-handed in (slice, row, column), i.e. against the normal: restack along it
        data = data[:, :, ::-1]
        affine[:, 3] = affine @ [0, 0, len(ordered) - 1, 1]
        affine[:, 2] *= -1
    data = np.ascontiguousarray(data)
    if not np.isfinite(data).all():
        raise DicomError(422, f"{series.label()}: pixel values are not finite after rescaling")
    return data, affine, ordered


def frames_from_volume(volume: np.ndarray) -> np.ndarray:
    """A (columns, rows, slices) array back in DICOM frame order (slices, rows, columns): the inverse of the
    transpose in `series_volume`, for writing a DICOM-SEG over the same source images."""
    return np.ascontiguousarray(np.asarray(volume).transpose(2, 1, 0))


def describe(series: Sequence[Series]) -> str:
    """The series of an upload, one phrase each, for messages that list what was found."""
    return "; ".join(f"{s.description or '(no SeriesDescription)'!r}: {len(s.datasets)} files" for s in series)

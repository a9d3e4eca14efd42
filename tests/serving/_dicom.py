"""DICOM test data made from NIfTI volumes: one MR series per channel, written with pydicom the way a scanner
would (LPS patient frame, one file per slice, int16 stored values with RescaleSlope/Intercept).

The geometry is written from the NIfTI affine independently of the reader under test (voxel (i, j, k) = column i,
row j, slice k; LPS = RAS with x and y negated), so reading a series back must give the NIfTI data and affine.
"""

from __future__ import annotations

import io
import zipfile
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

SLOPE, INTERCEPT = 0.5, -100.0
SHAPE = (20, 18, 16)


def rotation(degrees_z: float, degrees_x: float) -> np.ndarray:
    """A proper rotation (det +1), so slices stack along the DICOM normal and no axis is flipped on reading."""
    a, b = np.radians(degrees_z), np.radians(degrees_x)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def oblique_images(channels: Sequence[str], shape=SHAPE, seed: int = 0) -> dict[str, nib.Nifti1Image]:
    """NIfTI images on one oblique grid (rotated 20° about z and 10° about x, 0.9 × 1.1 × 2 mm), values that int16
    stored pixels with SLOPE/INTERCEPT hold exactly: a noisy head-like block with a bright blob."""
    rng = np.random.default_rng(seed)
    affine = np.eye(4)
    affine[:3, :3] = rotation(20, 10) @ np.diag([0.9, 1.1, 2.0])
    affine[:3, 3] = [-8.0, 12.5, -30.0]
    out = {}
    for i, name in enumerate(channels):
        stored = np.zeros(shape, dtype=np.int32)
        stored[3:-3, 2:-2, 2:-3] = rng.integers(380 + 40 * i, 420 + 40 * i, size=(shape[0] - 6, shape[1] - 4,
                                                                                     shape[2] - 5))
        stored[8:14, 7:12, 6:11] += 160
        out[name] = nib.Nifti1Image((stored * SLOPE + INTERCEPT).astype(np.float32), affine)
    return out


def _ds(values: Sequence[float]) -> list[DSfloat]:
    return [DSfloat(float(v), auto_format=True) for v in values]


def series_from_image(img: nib.Nifti1Image, description: str, *, study_uid: str, frame_uid: str,
                      series_number: int = 1, syntax: str = ExplicitVRLittleEndian) -> list[Dataset]:
    """One single-frame MR dataset per slice k of `img` (pixel rows = NIfTI j, columns = NIfTI i)."""
    data = np.asarray(img.dataobj, dtype=np.float64)
    affine = np.asarray(img.affine, dtype=np.float64)
    flip = np.array([-1.0, -1.0, 1.0])
    col_step, row_step = affine[:3, 0] * flip, affine[:3, 1] * flip  # LPS steps along columns (i) and rows (j)
    iop = np.concatenate([col_step / np.linalg.norm(col_step), row_step / np.linalg.norm(row_step)])
    spacing = [np.linalg.norm(row_step), np.linalg.norm(col_step)]  # DICOM: (between rows, between columns)
    series_uid = generate_uid()
    out = []
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = syntax
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Phantom", "P001", "19700101", "O"
        ds.StudyID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "1", "20240101", "120000", "A1"
        ds.ReferringPhysicianName, ds.Modality, ds.Manufacturer = "", "MR", "voxray-tests"
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = description, series_number, k + 1
        ds.ImagePositionPatient = _ds((affine @ [0, 0, k, 1])[:3] * flip)
        ds.ImageOrientationPatient = _ds(iop)
        ds.PixelSpacing = _ds(spacing)
        ds.SliceThickness = DSfloat(float(np.linalg.norm(affine[:3, 2])), auto_format=True)
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = DSfloat(SLOPE), DSfloat(INTERCEPT), "US"
        stored = np.rint((data[:, :, k].T - INTERCEPT) / SLOPE).astype("<i2")  # (rows, columns)
        ds.PixelData = stored.tobytes()
        out.append(ds)
    return out


def dcm_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def study(images: Mapping[str, nib.Nifti1Image], descriptions: Mapping[str, str]) -> dict[str, list[Dataset]]:
    """One series per channel in one study and frame of reference, described by `descriptions[channel]`."""
    study_uid, frame_uid = generate_uid(), generate_uid()
    return {c: series_from_image(img, descriptions[c], study_uid=study_uid, frame_uid=frame_uid, series_number=i + 1)
            for i, (c, img) in enumerate(images.items())}


def zip_bytes(files: Mapping[str, bytes]) -> bytes:
    """A deflated zip of {member path: bytes}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_study(series: Mapping[str, list[Dataset]], folders: bool = False) -> bytes:
    """The series as one zip: `<channel>/<n>.dcm` with folders, else `<series n>_<slice n>.dcm` (unnamed)."""
    return zip_bytes({(f"{c}/{k:03d}.dcm" if folders else f"s{i}_{k:03d}.dcm"): dcm_bytes(ds)
                      for i, (c, datasets) in enumerate(series.items()) for k, ds in enumerate(datasets)})

"""Malformed or oversized DICOM uploads: each a 4xx whose message names the file and the reason (TestClient)."""

from __future__ import annotations

import copy

import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLossless, JPEGLosslessSV1, generate_uid

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor

from _dicom import dcm_bytes, oblique_images, study, zip_bytes, zip_study
from conftest import CHANNELS

KEY = "dicom-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_registry(tiny_model)


def _post(predictor, body: bytes, limits: Limits | None = None):
    service = ModelService(predictor, limits or Limits(max_voxels=40**3, max_dim=64), [key_digest(KEY)])
    with TestClient(build_app(service)) as client:
        r = client.post("/v1/predict", headers=AUTH, files={"study": ("study.zip", body, "application/zip")})
    return r.status_code, r.json()["detail"]


@pytest.fixture(scope="module")
def series():
    return study(oblique_images(CHANNELS), {"flair": "AX FLAIR", "t1gd": "AX T1 GD"})


def _edited(series, edit) -> dict:
    """A deep copy of the series with `edit(flair datasets)` applied."""
    out = copy.deepcopy(series)
    edit(out["flair"])
    return out


def _no_decoder_syntax():
    for uid in (JPEGLossless, JPEGLosslessSV1):
        if not get_decoder(uid).is_available:
            return uid
    pytest.fail("every JPEG Lossless decoder is installed here: pick another transfer syntax for this test")


def _compressed(datasets):
    uid = _no_decoder_syntax()
    for ds in datasets:
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([ds.PixelData])


def _rotated(datasets):
    datasets[5].ImageOrientationPatient = [0, 1, 0, 1, 0, 0]


def _other_series(datasets):
    for ds in datasets[8:]:
        ds.SeriesInstanceUID = generate_uid()


CASES = {
    "missing pixel data": (lambda d: delattr(d[3], "PixelData"), 422, "s0_003.dcm: DICOM file has no pixel data"),
    "inconsistent spacing": (lambda d: d.pop(7), 422, "inconsistent slice spacing"),
    "inconsistent orientation": (_rotated, 422, "s0_005.dcm: ImageOrientationPatient"),
    "compressed, no decoder": (_compressed, 415, "has no decoder installed here"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_series(predictor, series, case):
    edit, status, message = CASES[case]
    code, detail = _post(predictor, zip_study(_edited(series, edit)))
    assert code == status and message in detail, detail


def test_mixed_series_in_one_channel(predictor, series):
    code, detail = _post(predictor, zip_study(_edited(series, _other_series), folders=True))
    assert code == 422 and "channel 'flair': mixed series in one channel" in detail


def test_not_dicom(predictor, series):
    members = {"flair/001.dcm": dcm_bytes(series["flair"][0]), "notes/readme.txt": b"hello"}
    code, detail = _post(predictor, zip_bytes(members))
    assert code == 400 and "study/notes/readme.txt: not a DICOM file" in detail
    code, detail = _post(predictor, b"PK\x03\x04 but not a zip")
    assert code == 400 and "study: not a readable zip" in detail


def test_bounds_before_extracting(predictor, series):
    upload = zip_study(series)  # 32 files
    code, detail = _post(predictor, upload, Limits(max_channels=1, max_dim=24, max_voxels=40**3))
    assert code == 413 and "32 files in the zip exceed the limit of 24" in detail
    bomb = zip_bytes({"a.dcm": bytes(3 * 2**20)})  # 3 MiB of zeros in a 3 KB zip
    code, detail = _post(predictor, bomb, Limits(max_upload_bytes=2**21, max_inflight_bytes=2**30))
    assert code == 413 and "member a.dcm of 3145728 bytes exceeds the per-file limit" in detail
    many = zip_bytes({f"{i}.dcm": bytes(2**20) for i in range(3)})
    code, detail = _post(predictor, many, Limits(max_upload_bytes=2**21, max_inflight_bytes=2**30))
    assert code == 413 and "the zip inflates to 3145728 bytes" in detail



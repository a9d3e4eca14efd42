"""DICOM in, NIfTI mask or DICOM-SEG out over HTTP (TestClient, the tiny 2-channel registry model).

The series are written from NIfTI volumes (tests/serving/_dicom.py); predicting from the DICOM must give the mask
predicted from those NIfTI volumes, voxel for voxel, and the DICOM-SEG read back with highdicom must hold the same
voxels in the source series' frames.
"""

from __future__ import annotations

import gzip
import io

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.dicom_in import decode_dicom
from voxray.serving.service import ModelService
from voxray.serving.stats import class_masks
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor, volume_from_images

from _dicom import dcm_bytes, oblique_images, study, zip_study
from conftest import CHANNELS

KEY = "dicom-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DESCRIPTIONS = {"flair": "AX T2 FLAIR", "t1gd": "AX T1 POST GD"}


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_registry(tiny_model)


def _client(predictor, limits: Limits | None = None, rule=None) -> TestClient:
    service = ModelService(predictor, limits or Limits(max_voxels=40**3, max_dim=64), [key_digest(KEY)],
                           series_rule=rule)
    return TestClient(build_app(service))


@pytest.fixture(scope="module")
def client(predictor):
    with _client(predictor) as c:
        yield c


@pytest.fixture(scope="module")
def nifti():
    return oblique_images(CHANNELS)


@pytest.fixture(scope="module")
def series(nifti):
    return study(nifti, DESCRIPTIONS)


@pytest.fixture(scope="module")
def expected(predictor, nifti):
    mask = predictor.predict(volume_from_images(nifti, predictor.channels))
    assert any(on.any() for on in class_masks(mask, predictor.card).values()), "nothing predicted: a vacuous test"
    return mask


def _parts(series, fields=None):
    """Multipart .dcm parts, one per slice; the field is the channel name (or `fields[channel]`)."""
    return [((fields or {}).get(c, c), (f"{c}_{k:03d}.dcm", dcm_bytes(ds), "application/dicom"))
            for c, datasets in series.items() for k, ds in enumerate(datasets)]


def test_zip_matched_by_series_description(client, series, nifti, expected):
    r = client.post("/v1/predict", headers=AUTH, files={"study": ("study.zip", zip_study(series), "application/zip")})
    assert r.status_code == 200, r.text
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    assert np.allclose(mask.affine, nifti["flair"].affine, atol=1e-4)
    assert np.array_equal(np.asarray(mask.dataobj), expected)


def test_dicom_seg_from_multipart_parts(client, predictor, series, expected):
    r = client.post("/v1/predict", headers=AUTH | {"Accept": "application/dicom"}, files=_parts(series))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    seg = hd.seg.segread(io.BytesIO(r.content))
    flair = series["flair"]
    assert seg.SeriesInstanceUID != flair[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == flair[0].SeriesInstanceUID
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["edema", "tumour"]
    uids = [ds.SOPInstanceUID for ds in flair]  # slice k of the NIfTI volume
    frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])  # (slices, rows, columns, segments)
    for n, on in enumerate(class_masks(expected, predictor.card).values()):
        assert np.array_equal(frames[..., n].transpose(2, 1, 0).astype(bool), on)


def test_series_rule_from_the_spec(predictor, nifti, expected):
    named = study(nifti, {"flair": "SEQ 7", "t1gd": "SEQ 9"})
    upload = {"s": ("s.zip", zip_study(named), "application/zip")}
    with _client(predictor) as plain:
        r = plain.post("/v1/predict", headers=AUTH, files=upload)
    assert r.status_code == 422 and "no DICOM series for channel(s) ['flair', 't1gd']" in r.json()["detail"]
    with _client(predictor, rule={"flair": r"SEQ 7$", "t1ce": r"SEQ 9$"}) as ruled:  # t1ce: alias of t1gd
        r = ruled.post("/v1/predict", headers=AUTH, files=upload)
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(r.content)).dataobj), expected)


def test_zip_folders_name_channels(client, nifti, expected):
    swapped = study(nifti, {"flair": "sag t1", "t1gd": "sag flair"})  # descriptions lie; folders decide
    r = client.post("/v1/predict", headers=AUTH, files={"z": ("z.zip", zip_study(swapped, folders=True), "x")})
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(r.content)).dataobj), expected)


def test_nifti_upload_asking_for_dicom_seg_is_422(client, nifti):
    files = [(c, (f"{c}.nii", nifti[c].to_bytes(), "x")) for c in CHANNELS]
    r = client.post("/v1/predict", headers=AUTH | {"Accept": "application/dicom"}, files=files)
    assert r.status_code == 422 and "needs DICOM input" in r.json()["detail"]


def test_series_to_volume_equals_the_nifti(predictor, nifti, series, images):
    """Oblique grid: the DICOM volume is the NIfTI voxel for voxel with its affine. A left-handed (radiological)
    NIfTI comes back with its slices stacked along the DICOM normal instead: same voxels at the same world points."""
    volume, like = decode_dicom({"z": zip_study(series)}, CHANNELS, Limits())
    for i, c in enumerate(CHANNELS):
        assert np.array_equal(volume.image[i], np.asarray(nifti[c].dataobj))
    assert np.allclose(like.affine, nifti["flair"].affine, atol=1e-4)
    assert [int(ds.InstanceNumber) for ds in like.extra["dicom_source"]] == list(range(1, 17))

    lefty = {c: nib.Nifti1Image(np.rint(np.asarray(img.dataobj)), img.affine) for c, img in images.items()}
    assert np.linalg.det(lefty["flair"].affine[:3, :3]) < 0
    volume, like = decode_dicom({"z": zip_study(study(lefty, DESCRIPTIONS))}, CHANNELS, Limits())
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, lefty["flair"].shape[2] - 1
    assert np.allclose(like.affine, lefty["flair"].affine @ flip, atol=1e-4)
    assert np.array_equal(volume.image[0], np.asarray(lefty["flair"].dataobj)[:, :, ::-1])


def test_spec_rule_reaches_the_replica(tiny_model):
    from pydantic import ValidationError

    from voxray.platform.specs.serve import ServeSpec
    from voxray.serving.runner import replica_config

    rule = {"flair": r"SEQ 7$", "t1ce": r"SEQ 9$"}  # keys may be aliases of the card's channels
    spec = ServeSpec(model=str(tiny_model.parent), api_key_env=None, allow_anonymous=True, dicom_series=rule)
    assert replica_config(spec, host="127.0.0.1").dicom_series == rule
    with pytest.raises(ValidationError, match=r"dicom_series.flair: '\(' is not a valid regex"):
        ServeSpec(model=str(tiny_model.parent), dicom_series={"flair": "("})


def test_raw_zip_body(client, series, expected):
    r = client.post("/v1/predict", headers=AUTH | {"Content-Type": "application/zip"}, content=zip_study(series))
    assert r.status_code == 200, r.text
    assert np.array_equal(np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(r.content)).dataobj), expected)

"""HTTP routes without Ray: FastAPI TestClient over a ModelService with the tiny registry model."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor, volume_from_images

from conftest import CHANNELS, gzip_bomb, nifti_header, nii_bytes

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_registry(tiny_model)


@pytest.fixture(scope="module")
def client(predictor):
    service = ModelService(predictor, Limits(max_upload_bytes=300_000, max_voxels=40**3, max_dim=64),
                           [key_digest(KEY)])
    with TestClient(build_app(service)) as c:
        yield c


def _files(images, names=None):
    names = names or list(images)
    return [(n, (f"{n}.nii.gz", nii_bytes(images[k]), "application/gzip")) for n, k in zip(names, images)]


def test_predict_matches_in_process(client, predictor, images):
    r = client.post("/v1/predict", headers=AUTH, files=_files(images))
    assert r.status_code == 200, r.text
    mask = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    ref = images[CHANNELS[0]]
    assert mask.shape == ref.shape and np.allclose(mask.affine, ref.affine)
    assert mask.get_data_dtype() == np.uint8
    expected = predictor.predict(volume_from_images(images, predictor.channels))
    assert np.array_equal(np.asarray(mask.dataobj), expected)


def test_aliases_and_4d_and_json(client, predictor, images):
    aliased = client.post("/v1/predict", headers=AUTH, files=_files(images, ["T2-FLAIR", "t1ce"]))
    stacked = np.stack([np.asarray(images[c].dataobj) for c in CHANNELS], axis=-1)
    four_d = nib.Nifti1Image(stacked, images[CHANNELS[0]].affine)
    one = client.post("/v1/predict", headers=AUTH, files=[("image", ("x.nii", four_d.to_bytes(), "x"))])
    raw = client.post("/v1/predict", headers={**AUTH, "Content-Type": "application/octet-stream"},
                      content=nii_bytes(four_d))
    assert aliased.status_code == one.status_code == raw.status_code == 200
    assert aliased.content == one.content == raw.content
    js = client.post("/v1/predict?format=json", headers=AUTH, files=_files(images)).json()
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(one.content)).dataobj)
    voxel_ml = 1.2 * 1.0 * 1.5 / 1000
    assert js["classes"]["edema"]["voxels"] == int((mask == 1).sum())
    assert js["classes"]["tumour"]["volume_ml"] == pytest.approx((mask == 2).sum() * voxel_ml, abs=1e-3)
    assert js["classes"]["tumour"]["lesions"] >= 1 and js["version"] == 1


def test_auth_required(client, images):
    assert client.post("/v1/predict", files=_files(images)).status_code == 401
    r = client.post("/v1/predict", headers={"Authorization": "Bearer nope"}, files=_files(images))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/model").status_code == 401
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["channels"] == CHANNELS and info["labels"] == {"0": "background", "1": "edema", "2": "tumour"}
    assert info["metrics"] == {"val/dice_mean": 0.5} and info["name"] == "tiny"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert "/v1/predict" in client.get("/openapi.json", headers=AUTH).json()["paths"]


def test_bad_requests(client, images):
    one = _files(images)[:1]
    assert client.post("/v1/predict", headers=AUTH, files=one).status_code == 422  # a 3D image, 2-channel model
    three = _files(images) + [("t2", ("t2.nii.gz", nii_bytes(images["flair"]), "x"))]
    r = client.post("/v1/predict", headers=AUTH, files=three)
    assert r.status_code == 422 and "unknown ['t2']" in r.json()["detail"]
    moved = nib.Nifti1Image(np.asarray(images["t1gd"].dataobj), np.diag([1.0, 1.0, 1.0, 1.0]))
    r = client.post("/v1/predict", headers=AUTH, files=_files({"flair": images["flair"], "t1gd": moved}))
    assert r.status_code == 422 and "grid" in r.json()["detail"]
    r = client.post("/v1/predict", headers={**AUTH, "Content-Type": "text/plain"}, content=b"hi")
    assert r.status_code == 415
    big = client.post("/v1/predict", headers={**AUTH, "Content-Type": "application/octet-stream"},
                      content=b"\0" * 400_000)
    assert big.status_code == 413


def test_hostile_uploads_refused_and_server_alive(client, images):
    """Bombs and broken headers over HTTP: each a 4xx with a reason (never a 500), then a normal request works."""
    bombs = {"flair_544": (gzip_bomb(nifti_header((4, 4, 3))), 413),
             "flair_small": (gzip_bomb(nifti_header((1, 1, 1), np.uint8)), 413),
             "offset": (gzip_bomb(nifti_header((1, 1, 1), offset=1e9)), 400)}
    for name, (data, status) in bombs.items():
        r = client.post("/v1/predict", headers={**AUTH, "Content-Type": "application/octet-stream"}, content=data)
        assert r.status_code == status, (name, r.text)
        assert r.json()["detail"].startswith("image: "), r.text
    assert client.post("/v1/predict", headers=AUTH, files=_files(images)).status_code == 200


def test_duplicate_fields_refused(client, images):
    dup = _files(images) + [("flair", ("again.nii.gz", nii_bytes(images["flair"]), "application/gzip"))]
    r = client.post("/v1/predict", headers=AUTH, files=dup)
    assert r.status_code == 422 and "more than once" in r.json()["detail"]

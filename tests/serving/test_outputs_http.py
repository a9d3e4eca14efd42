"""POST /v1/predict beyond the mask: ?outputs= (zip), ?tta=, and the uncertainty score in JSON and headers."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor, volume_from_images

from conftest import CHANNELS, SHAPE, nii_bytes

KEY = "outputs-key-1"
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


def _files(images):
    return [(n, (f"{n}.nii.gz", nii_bytes(img), "application/gzip")) for n, img in images.items()]


def _zip(content: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _nii(raw: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(raw))


def test_every_output_in_one_zip(client, predictor, images):
    r = client.post("/v1/predict", headers=AUTH, files=_files(images),
                    params={"outputs": "mask,probabilities,uncertainty", "tta": "mirror"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip" and r.headers["x-voxray-tta-members"] == "8"
    parts = _zip(r.content)
    assert set(parts) == {"mask.nii.gz", "probabilities.nii.gz", "uncertainty.nii.gz", "summary.json"}
    ref = images[CHANNELS[0]]
    mask, probs, unc = (_nii(parts[f"{n}.nii.gz"]) for n in ("mask", "probabilities", "uncertainty"))
    assert mask.shape == SHAPE and probs.shape == (*SHAPE, 3) and unc.shape == (*SHAPE, 2)
    assert all(np.allclose(img.affine, ref.affine) for img in (mask, probs, unc))
    np.testing.assert_allclose(probs.get_fdata().sum(-1), 1.0, atol=1e-3)
    expected = predictor.predict_full(volume_from_images(images, CHANNELS), tta="mirror").mask
    assert np.array_equal(np.asarray(mask.dataobj), expected)
    summary = json.loads(parts["summary.json"])
    assert summary["uncertainty"]["tta_members"] == 8 and float(r.headers["x-voxray-uncertainty"]) == pytest.approx(
        summary["uncertainty"]["score"])


def test_json_carries_the_score_and_tta_is_per_request(client, images):
    plain = client.post("/v1/predict", headers=AUTH, files=_files(images), params={"format": "json"}).json()
    tta = client.post("/v1/predict", headers=AUTH, files=_files(images),
                      params={"format": "json", "tta": "0,2"}).json()
    assert plain["uncertainty"]["tta_members"] == 1 and tta["uncertainty"]["tta_members"] == 4
    assert {"score", "region", "voxels", "max_entropy"} <= set(plain["uncertainty"]) and "classes" in plain
    mask_only = client.post("/v1/predict", headers=AUTH, files=_files(images))
    assert mask_only.headers["content-type"] == "application/gzip" and "x-voxray-uncertainty" in mask_only.headers


def test_bad_options_are_422_and_auth_still_comes_first(client, images):
    for params, words in [({"outputs": "mask,logits"}, "unknown outputs"), ({"tta": "sideways"}, "tta"),
                          ({"tta": "3"}, "axes 0..2")]:
        r = client.post("/v1/predict", headers=AUTH, files=_files(images), params=params)
        assert r.status_code == 422 and words in r.json()["detail"], (params, r.text)
    r = client.post("/v1/predict", files=_files(images), params={"outputs": "probabilities"})
    assert r.status_code == 401


def test_outputs_count_in_memory_admission(predictor, images):
    service = ModelService(predictor, Limits(), None)
    files = {n: nii_bytes(img) for n, img in images.items()}
    mask = service.request_cost(files)
    everything = service.request_cost(files, ("mask", "probabilities", "uncertainty"), (0, 1, 2))
    assert everything > mask + 4 * int(np.prod(SHAPE)) * 6  # probabilities, maps and TTA variance are reserved too

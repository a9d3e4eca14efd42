"""Degenerate volumes (1×1×1, a thumbnail, a single slice for a 3D model) are refused with 422 naming the model's
minimum extent (half its sliding window on the model grid); the smallest accepted volume still segments."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.extent import check_extent, grid_extent, minimum_extent
from voxray.training.predict import InvalidInput, Predictor

from conftest import CHANNELS, nii_bytes

KEY = "degenerate-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def client(tiny_model):
    service = ModelService(Predictor.from_registry(tiny_model), Limits(max_voxels=40**3, max_dim=64),
                           [key_digest(KEY)])
    with TestClient(build_app(service)) as c:
        yield c


def _post(client, shape):
    rng = np.random.default_rng(0)
    files = [(n, (f"{n}.nii.gz", nii_bytes(nib.Nifti1Image(rng.normal(100, 10, shape).astype(np.float32),
                                                             np.eye(4))), "application/gzip")) for n in CHANNELS]
    return client.post("/v1/predict", headers=AUTH, files=files)


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 7, 7), (22, 20, 1), (22, 3, 18)])
def test_degenerate_volumes_refused_with_the_minimum(client, shape):
    r = _post(client, shape)  # the tiny model's window is 16³ → at least 8×8×8
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("volume too small") and "at least 8×8×8 (half its 16×16×16 window)" in detail


def test_smallest_accepted_volume_segments(client):
    r = _post(client, (8, 8, 8))
    assert r.status_code == 200, r.text


def test_extent_on_the_model_grid():
    five_mm = np.diag([1.0, 1.0, 5.0, 1.0])
    assert grid_extent((100, 90, 4), five_mm, (1.0, 1.0, 1.0)) == (20.0, 90.0, 100.0)  # z, y, x
    assert grid_extent((100, 90, 4), five_mm, None) == (4.0, 90.0, 100.0)
    sagittal = np.array([[0, 0, 1.0, 0], [0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 0, 1]])  # file axis 0 → S
    assert grid_extent((10, 64, 64), sagittal, (1.0, 1.0, 1.0)) == (20.0, 64.0, 64.0)
    assert minimum_extent((128, 128, 128)) == (64, 64, 64) and minimum_extent((5,)) == (3,)
    check_extent((100, 90, 4), five_mm, (32, 32, 32), (1.0, 1.0, 1.0))  # 4 thick slices = 20 mm: accepted
    with pytest.raises(InvalidInput, match="needs at least 16×16×16"):
        check_extent((100, 90, 4), five_mm, (32, 32, 32), None)  # without resampling: 4 voxels
    check_extent((64, 64, 1), np.eye(4), (32, 32), None)  # a 2D model takes a single slice
    with pytest.raises(InvalidInput, match=r"2D \(per slice\) model needs at least 16×16"):
        check_extent((64, 8, 1), np.eye(4), (32, 32), None)

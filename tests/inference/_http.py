"""POST one 4D NIfTI to the real FastAPI app of a predictor (in-process TestClient) and read the mask back."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib

KEY = "inference-tests-key"


def http_mask(predictor, path: Path, **params) -> tuple[nib.Nifti1Image, dict, dict]:
    """(mask image, response headers, GET /v1/model) of POST /v1/predict with the file at `path` as the only
    upload."""
    from fastapi.testclient import TestClient

    from voxray.serving.app import build_app
    from voxray.serving.auth import key_digest
    from voxray.serving.service import ModelService
    from voxray.serving.validation import Limits

    service = ModelService(predictor, Limits(), [key_digest(KEY)])
    with TestClient(build_app(service)) as client:
        r = client.post("/v1/predict", headers={"Authorization": f"Bearer {KEY}"}, params=params,
                        files=[("image", (path.name, path.read_bytes(), "application/gzip"))])
        info = client.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert r.status_code == 200, r.text
    return nib.Nifti1Image.from_bytes(gzip.decompress(r.content)), dict(r.headers), info

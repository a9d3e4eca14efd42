"""The real thing: one module-scoped `serve.run` on the session Ray, driven over loopback HTTP.

Covers auth, predictions equal to in-process `predict`, the client and `voxray predict --url`, batching of
concurrent requests, and every kind of bad input — after which the server must still answer and its memory must
stay bounded.
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import nibabel as nib
import numpy as np
import pytest

from voxray.platform.specs.serve import ServeSpec
from voxray.training.predict import Predictor, volume_from_images

from conftest import CHANNELS, nii_bytes

pytestmark = pytest.mark.slow

KEY_ENV = "VOXRAY_TEST_SERVE_KEY"
KEY = "serve-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
APP = "voxray-serve-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(ray_session, tiny_model):
    from ray import serve

    from voxray.platform.specs.job import ServeJob
    from voxray.serving.runner import run_serve

    os.environ[KEY_ENV] = KEY
    spec = ServeSpec(model=str(tiny_model.parent), port=_free_port(), api_key_env=KEY_ENV, max_batch_size=8,
                     batch_wait_timeout_s=0.2, num_cpus=0.5, blocking=False,
                     limits={"max_upload_mb": 1.0, "max_voxels": 40**3, "max_dim": 64})
    result = run_serve(ServeJob(name=APP, serve=spec))
    assert result.ok and result.summary["version"] == 1
    url = result.summary["url"]
    handle = serve.get_deployment_handle("voxray-model", app_name=APP)
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            yield url, http, handle
    finally:
        serve.shutdown()
        os.environ.pop(KEY_ENV, None)


def _files(images, names=None):
    names = names or list(images)
    return [(n, (f"{n}.nii.gz", nii_bytes(images[k]), "application/gzip")) for n, k in zip(names, images)]


def _mask(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(response.content)).dataobj)


def test_auth_before_work(server, images):
    url, http, _ = server
    assert url.startswith("http://127.0.0.1:")
    assert http.post("/v1/predict", files=_files(images)).status_code == 401
    assert http.post("/v1/predict", headers={"Authorization": "Bearer wrong"}, files=_files(images)).status_code == 401
    assert http.get("/v1/model").status_code == 401
    assert http.get("/healthz").json() == {"status": "ok"} and http.get("/readyz").status_code == 200
    assert http.get("/docs").status_code == 401 and http.get("/docs", headers=AUTH).status_code == 200
    assert http.get("/readyz").json() == {"status": "ready"}


def test_predict_equals_in_process(server, images, tiny_model, tmp_path):
    from voxray.platform.cli.app import main
    from voxray.serving.client import Client

    url, http, _ = server
    expected = Predictor.from_registry(tiny_model).predict(volume_from_images(images, CHANNELS))
    assert np.array_equal(_mask(http.post("/v1/predict", headers=AUTH, files=_files(images))), expected)
    paths = {}
    for name, img in images.items():
        paths[name] = tmp_path / f"case_{name}.nii.gz"
        img.to_filename(str(paths[name]))
    with Client(url, KEY) as client:
        assert client.model()["channels"] == CHANNELS
        assert np.array_equal(np.asarray(client.predict(paths, out=tmp_path / "m.nii.gz").dataobj), expected)
        stats = client.predict_json(paths)
    assert stats["classes"]["tumour"]["voxels"] == int((expected == 2).sum())
    os.environ["VOXRAY_API_KEY_FOR_CLI"] = KEY
    try:
        code = main(["predict", "--url", url, "--api-key-env", "VOXRAY_API_KEY_FOR_CLI", "--input", str(paths["flair"]),
                     "--input", f"T1Gd={paths['t1gd']}", "--out", str(tmp_path / "cli.nii.gz")])
    finally:
        os.environ.pop("VOXRAY_API_KEY_FOR_CLI")
    assert code == 0
    cli = nib.load(str(tmp_path / "cli.nii.gz"))
    assert np.array_equal(np.asarray(cli.dataobj), expected) and np.allclose(cli.affine, images["flair"].affine)


def test_concurrent_requests_are_batched(server, images):
    _, http, handle = server
    before = handle.stats.remote().result()
    files = _files(images)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: http.post("/v1/predict", headers=AUTH, files=files), range(8)))
    masks = [_mask(r) for r in responses]
    assert all(np.array_equal(m, masks[0]) for m in masks)
    after = handle.stats.remote().result()
    assert after["max_batch"] > 1, after
    assert after["batches"] - before["batches"] < 8


def _bomb() -> bytes:
    raw = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)).to_bytes() + b"\0" * (32 * 2**20)
    return gzip.compress(raw, compresslevel=9)


def _huge_header() -> bytes:
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((4000, 4000, 4000))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352  # a bare header says 0, which a single-file NIfTI may not
    z = zlib.compressobj(wbits=31)
    return z.compress(hdr.binaryblock + b"\0" * 4) + z.compress(b"\0" * (4 * 2**20)) + z.flush()


def _stream(n_chunks: int):
    for _ in range(n_chunks):
        yield b"\0" * 65536


def test_bad_inputs_get_4xx_and_server_stays_up(server, images):
    _, http, handle = server
    good = _files(images)
    flair = images["flair"]
    nan = np.asarray(flair.dataobj).copy()
    nan[5, 5, 5] = np.nan
    shifted = nib.Nifti1Image(np.asarray(images["t1gd"].dataobj), np.eye(4))
    big = nib.Nifti1Image(np.zeros((50, 50, 30), np.float32), np.eye(4))
    data = good[0][1][1]
    cases = {
        "not nifti": ([("flair", ("a.nii.gz", b"GIF89a" * 200, "x")), good[1]], 400, "not a NIfTI"),
        "truncated gzip": ([("flair", ("a.nii.gz", data[: len(data) // 2], "x")), good[1]], 400, "truncated"),
        "gzip bomb": ([("flair", ("a.nii.gz", _bomb(), "x")), good[1]], 413, "inflates beyond"),
        "huge dims": ([("flair", ("a.nii.gz", _huge_header(), "x")), good[1]], 413, "max_dim"),
        "too many voxels": ([("flair", ("a.nii.gz", nii_bytes(big), "x")), good[1]], 413, "max_voxels"),
        "wrong names": ([good[0], ("t2", good[1][1])], 422, "unknown ['t2']"),
        "too few": (good[:1], 422, "missing ['t1gd']"),
        "mismatched grids": (_files({"flair": flair, "t1gd": shifted}), 422, "grid"),
        "nan": (_files({"flair": nib.Nifti1Image(nan, flair.affine), "t1gd": images["t1gd"]}), 422, "NaN"),
    }
    for label, (files, status, reason) in cases.items():
        r = http.post("/v1/predict", headers=AUTH, files=files)
        assert r.status_code == status, (label, r.status_code, r.text)
        assert reason in r.json()["detail"], (label, r.text)
    declared = http.post("/v1/predict", headers={**AUTH, "Content-Type": "application/octet-stream"},
                         content=b"\0" * (2 * 2**20))
    assert declared.status_code == 413
    streamed = http.post("/v1/predict", headers={**AUTH, "Content-Type": "application/octet-stream"},
                         content=_stream(40))  # chunked, no Content-Length: refused while streaming
    assert streamed.status_code == 413 and "exceeds" in streamed.json()["detail"]
    stats = handle.stats.remote().result()
    assert stats["peak_rss_mb"] < 2000, stats  # a 32 MiB bomb or a 4000³ header never got inflated
    assert http.get("/healthz").status_code == 200
    assert _mask(http.post("/v1/predict", headers=AUTH, files=good)).shape == flair.shape


def test_tta_mixes_in_batches_and_cli_fetches_every_output(server, images, tmp_path):
    """Requests with different TTA share a replica's batches but keep their own setting; `voxray predict --url`
    writes the mask, probabilities and uncertainty from one zip response."""
    from voxray.platform.cli.app import main

    url, http, _ = server
    files = _files(images)
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda tta: http.post("/v1/predict", headers=AUTH, files=files,
                                                      params={"format": "json", "tta": tta}).json(),
                                ["none", "mirror", "none", "mirror"]))
    assert [a["uncertainty"]["tta_members"] for a in answers] == [1, 8, 1, 8]
    assert answers[0] == answers[2] and answers[1]["uncertainty"] == answers[3]["uncertainty"]
    path = tmp_path / "case_flair.nii.gz"
    images["flair"].to_filename(str(path))
    images["t1gd"].to_filename(str(tmp_path / "case_t1gd.nii.gz"))
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("m", "p", "u")}
    os.environ["VOXRAY_API_KEY_FOR_CLI"] = KEY
    try:
        code = main(["predict", "--url", url, "--api-key-env", "VOXRAY_API_KEY_FOR_CLI", "-i", str(path),
                     "-i", str(tmp_path / "case_t1gd.nii.gz"), "-o", str(out["m"]), "--probabilities",
                     str(out["p"]), "--uncertainty", str(out["u"]), "--tta", "mirror"])
    finally:
        os.environ.pop("VOXRAY_API_KEY_FOR_CLI")
    assert code == 0
    shape = images["flair"].shape
    assert [nib.load(str(out[k])).shape for k in "mpu"] == [shape, (*shape, 3), (*shape, 2)]


def test_dicom_study_to_dicom_seg_through_ray_serve(server, tiny_model):
    """A zipped DICOM study through the real deployment: the DICOM-SEG holds the in-process NIfTI prediction."""
    import io

    import highdicom as hd

    from voxray.serving.stats import class_masks

    from _dicom import oblique_images, study, zip_study

    _, http, _ = server
    nifti = oblique_images(CHANNELS, seed=5)
    series = study(nifti, {"flair": "AX FLAIR", "t1gd": "AX T1 GD"})
    r = http.post("/v1/predict", headers=AUTH | {"Accept": "application/dicom"},
                  files={"study": ("study.zip", zip_study(series), "application/zip")})
    assert r.status_code == 200 and r.headers["content-type"] == "application/dicom", r.text
    predictor = Predictor.from_registry(tiny_model)
    expected = class_masks(predictor.predict(volume_from_images(nifti, predictor.channels)), predictor.card)
    seg = hd.seg.segread(io.BytesIO(r.content))
    frames = seg.get_pixels_by_source_instance([ds.SOPInstanceUID for ds in series["flair"]], segment_numbers=[1, 2])
    for n, on in enumerate(expected.values()):
        assert np.array_equal(frames[..., n].transpose(2, 1, 0).astype(bool), on)

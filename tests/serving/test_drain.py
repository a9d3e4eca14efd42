"""Graceful shutdown: a request in flight when the server is told to stop still gets its mask, and the stop waits
for it (the replica drains for up to `serve.drain_timeout_s` before Ray kills it)."""

from __future__ import annotations

import gzip
import os
import socket
import threading
import time

import httpx
import nibabel as nib
import numpy as np
import pytest

from voxray.platform.specs.serve import ServeSpec

from conftest import make_images, nii_bytes

pytestmark = pytest.mark.slow

KEY_ENV = "VOXRAY_TEST_DRAIN_KEY"
KEY = "drain-test-key-0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deployment_carries_the_drain_timeout(tiny_model):
    from voxray.serving.deployment import build_deployment
    from voxray.serving.runner import replica_config

    spec = ServeSpec(model=str(tiny_model.parent), api_key_env=None, allow_anonymous=True, drain_timeout_s=7)
    app = build_deployment(replica_config(spec, host="127.0.0.1"), drain_timeout_s=spec.drain_timeout_s)
    config = app._bound_deployment._deployment_config
    assert config.graceful_shutdown_timeout_s == 7 and config.graceful_shutdown_wait_loop_s == 0.5
    assert ServeSpec(model="/r/m").drain_timeout_s == 120  # Ray's 20 s would cut a queue of BraTS-size requests


def test_request_in_flight_at_shutdown_completes(ray_session, tiny_model):
    from voxray.serving.runner import start_serving, stop_serving

    os.environ[KEY_ENV] = KEY
    # 64³ at sliding-window overlap 0.75 with mirror TTA (8 passes per window): seconds of work on one thread
    spec = ServeSpec(model=str(tiny_model.parent), port=_free_port(), api_key_env=KEY_ENV, num_cpus=0.5,
                     sw_overlap=0.75, drain_timeout_s=120, blocking=False, route_prefix="/drain")
    url = start_serving(spec, "drain-test")
    files = [(n, (f"{n}.nii.gz", nii_bytes(img), "application/gzip")) for n, img in make_images((64, 64, 64)).items()]
    done: dict = {}

    def call() -> None:
        try:
            with httpx.Client(timeout=300) as http:
                r = http.post(f"{url}/v1/predict?tta=mirror", headers={"Authorization": f"Bearer {KEY}"},
                              files=files)
            done.update(status=r.status_code, body=r.content, text=r.text[:300])
        except httpx.HTTPError as exc:
            done.update(status=None, text=repr(exc))
        done["t"] = time.monotonic()

    try:
        with httpx.Client(timeout=60) as http:
            assert http.get(f"{url}/healthz").status_code == 200
        worker = threading.Thread(target=call)
        worker.start()
        time.sleep(1.5)  # the upload is in and decoding or inference has begun
        assert "t" not in done, "the request finished before shutdown began; make it slower"
        t_stop = time.monotonic()
        stop_serving("drain-test")
        t_stopped = time.monotonic()
        worker.join(300)
    finally:
        os.environ.pop(KEY_ENV, None)
    assert done.get("status") == 200, done.get("text")
    mask = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(done["body"])).dataobj)
    assert mask.shape == (64, 64, 64)
    assert t_stop < done["t"] <= t_stopped + 1.0  # in flight when the stop began; the stop waited for it

"""Shared fixtures: one small embedded Ray for the whole session (ray.init costs ~4 s here), always shut down, and a
real S3 server (SeaweedFS) started on demand with its endpoint and credentials in the environment."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from _s3server import S3Server  # noqa: E402  (tests/ is on sys.path: this conftest's folder)

S3 = S3Server.reserve()
"""Endpoint and credentials are fixed now, before any Ray starts, so Ray workers inherit them (see _s3server)."""
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
    os.environ.pop(_name, None)
os.environ.update(S3.env())
# node-local working copies of remote run dirs and models (platform/storage.py): one folder per test session
os.environ["VOXRAY_CACHE_DIR"] = tempfile.mkdtemp(prefix="voxray-test-cache-")


@contextmanager
def _ray_start(**kwargs) -> Iterator[dict]:
    import ray

    defaults = dict(num_cpus=2, include_dashboard=False, namespace="voxray-tests", object_store_memory=300 * 1024**2,
                    logging_level="WARNING", log_to_driver=False)
    defaults.update(kwargs)
    info = ray.init(**defaults)
    try:
        yield info
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_session():
    """The session-wide embedded Ray (2 CPUs, no dashboard). Tests that need Ray take this fixture."""
    import ray

    if ray.is_initialized():
        yield None
        return
    with _ray_start() as info:
        yield info


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> Iterator[S3Server]:
    """The session's SeaweedFS S3 server (started on first use, ~1-3 s; killed by PID at the end)."""
    S3.start(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield S3
    finally:
        S3.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh empty bucket for one test, as an `s3://` URI (credentials and endpoint are in the environment)."""
    return f"s3://{s3_server.create_bucket()}"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(os.environ.get("VOXRAY_CACHE_DIR", ""), ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Unmarked tests are `fast`; `gpu` tests skip where CUDA is absent (CI has none)."""
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_gpu = False
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("slow", "cluster", "gpu")):
            item.add_marker(pytest.mark.fast)
        if item.get_closest_marker("gpu") and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)"))

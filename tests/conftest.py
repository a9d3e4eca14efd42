"""Shared fixtures: one small embedded Ray for the whole session (ray.init costs ~4 s here), always shut down."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


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

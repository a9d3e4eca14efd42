"""Ray runtime: a remote task runs on the embedded Ray; a Ray already up is reused, not shut down."""

from __future__ import annotations

import pytest

from voxray.platform.errors import StageUnavailable
from voxray.platform.runtime import ray_runtime
from voxray.platform.specs.common import RaySpec
from voxray.platform import stages


def test_remote_task_runs_on_embedded_ray(ray_session):
    import ray

    @ray.remote
    def square(x: int) -> int:
        return x * x

    with ray_runtime(RaySpec()) as info:
        assert not info.embedded  # the session Ray is reused
        assert info.resources.get("CPU", 0) >= 1
        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert ray.is_initialized()  # not ours to stop


def test_missing_stage_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(stages.RUNNERS, "train", "voxray.training.does_not_exist:run")
    with pytest.raises(StageUnavailable, match="'train' stage is not available"):
        stages.get_runner("train")
    with pytest.raises(StageUnavailable, match="unknown job kind 'bake'"):
        stages.get_runner("bake")

"""Memory admission: a replica flooded with concurrent valid uploads answers 503 + Retry-After to the ones that do
not fit its in-flight budget, 413 to one that alone exceeds it, never crashes, and serves again once idle."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from voxray.serving.admission import MemoryBudget
from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits, UploadError
from voxray.training.predict import Predictor

from conftest import CHANNELS, make_images, nii_bytes

KEY = "admission-key"
SHAPE = (48, 48, 40)
LIMITS = dict(max_upload_bytes=8 * 2**20, max_voxels=64**3, max_dim=64)


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_registry(tiny_model)


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    return {name: nii_bytes(img) for name, img in make_images(SHAPE).items()}


def _service(predictor, budget: int, delay_s: float = 0.5) -> ModelService:
    async def slow_infer(request):  # a model that takes a while, so requests overlap
        await asyncio.sleep(delay_s)
        return (await asyncio.to_thread(predictor.run, [request]))[0]

    return ModelService(predictor, Limits(**LIMITS, max_inflight_bytes=budget), [key_digest(KEY)], infer=slow_infer)


async def _post_many(service: ModelService, uploads: dict[str, bytes], n: int) -> tuple[list, httpx.Response]:
    files = [(c, (f"{c}.nii.gz", uploads[c], "application/gzip")) for c in CHANNELS]
    transport = httpx.ASGITransport(app=build_app(service))
    async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=300,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        flood = await asyncio.gather(*[client.post("/v1/predict", files=files) for _ in range(n)])
        later = await client.post("/v1/predict?format=json", files=files)
    return flood, later


def test_flood_gets_503_and_later_requests_succeed(predictor, uploads):
    cost = _service(predictor, 2**30).request_cost(uploads)
    service = _service(predictor, budget=int(cost * 1.5))  # one request fits, two do not
    flood, later = asyncio.run(_post_many(service, uploads, 6))
    codes = [r.status_code for r in flood]
    assert set(codes) <= {200, 503} and 1 <= codes.count(200) < len(codes), codes
    for r in flood:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "2" and "server busy" in r.json()["detail"]
    assert later.status_code == 200 and later.json()["classes"]
    assert service.budget.used == 0  # every reservation released, refused ones included
    assert 0 < service.budget.peak <= service.budget.capacity
    print(f"request cost estimate {cost / 2**20:.1f} MiB; budget {service.budget.capacity / 2**20:.1f} MiB; "
          f"codes {codes}")


def test_single_request_over_budget_is_413(predictor, uploads):
    cost = _service(predictor, 2**30).request_cost(uploads)
    service = _service(predictor, budget=cost // 2, delay_s=0)
    flood, _ = asyncio.run(_post_many(service, uploads, 1))
    r = flood[0]
    assert r.status_code == 413 and "in-flight memory budget" in r.json()["detail"], r.text
    assert service.budget.used == 0


def test_cost_estimated_from_headers_before_decoding(predictor, uploads):
    """The estimate grows with the declared volume and needs no decode: a bomb's cost is its header's, and a
    broken header is refused by the estimate itself."""
    service = _service(predictor, 2**30)
    small = service.request_cost({c: nii_bytes(img) for c, img in make_images((24, 24, 20)).items()})
    assert small < service.request_cost(uploads)
    with pytest.raises(UploadError, match="not a NIfTI") as err:
        service.request_cost({"flair": b"not a nifti" * 100})
    assert err.value.status == 400


def test_budget_bookkeeping():
    budget = MemoryBudget(100)
    a, b = budget.hold(), budget.hold()
    a.resize(60)
    with pytest.raises(UploadError) as busy:
        b.resize(50)
    assert busy.value.status == 503 and b.held == 0 and budget.used == 60
    with pytest.raises(UploadError) as big:
        b.resize(101)
    assert big.value.status == 413
    a.resize(30)
    b.resize(70)
    assert budget.used == 100 and budget.peak == 100
    a.release(), b.release()
    assert budget.used == 0


def test_spec_budget_must_hold_one_upload():
    from pydantic import ValidationError

    from voxray.platform.specs.serve import LimitsSpec

    assert Limits.from_spec(LimitsSpec()).max_inflight_bytes == 2 * 2**30
    with pytest.raises(ValidationError, match="could never be admitted"):
        LimitsSpec(max_upload_mb=4096)

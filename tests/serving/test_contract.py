"""The API contract: every status a route returns is in openapi.json with the one error schema, and real error
responses (400 … 503, and a 500) validate against it; bearer securitySchemes; /docs loads only local files."""

from __future__ import annotations

import re

import jsonschema
import pytest
from fastapi.testclient import TestClient

from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.contract import INTERNAL
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor

from conftest import nii_bytes

KEY = "contract-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
EXPECTED = {("/v1/predict", "post"): {400, 401, 413, 415, 422, 500, 503}, ("/v1/model", "get"): {401, 500},
            ("/healthz", "get"): {500}, ("/readyz", "get"): {500}}


@pytest.fixture(scope="module")
def service(tiny_model):
    limits = Limits(max_upload_bytes=300_000, max_voxels=40**3, max_dim=64, max_inflight_bytes=64 * 2**20)
    return ModelService(Predictor.from_registry(tiny_model), limits, [key_digest(KEY)])


@pytest.fixture(scope="module")
def client(service):
    with TestClient(build_app(service), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def doc(client) -> dict:
    return client.get("/openapi.json", headers=AUTH).json()


def _error_schema(doc: dict, path: str, method: str, status: int) -> dict:
    """The response schema documented for `status`, with its $refs resolvable against the document."""
    response = doc["paths"][path][method]["responses"][str(status)]
    return {**response["content"]["application/json"]["schema"], "components": doc["components"]}


def test_every_route_documents_its_statuses_with_the_error_schema(doc):
    operations = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert operations == set(EXPECTED)
    for (path, method), statuses in EXPECTED.items():
        responses = doc["paths"][path][method]["responses"]
        errors = {int(s) for s in responses if not s.startswith("2")}
        assert errors == statuses, (path, errors)
        for status in statuses:
            assert _error_schema(doc, path, method, status)["$ref"] == "#/components/schemas/ErrorBody"
    assert "HTTPValidationError" not in doc["components"]["schemas"]  # FastAPI's list shape is not what 422 sends
    retry = doc["paths"]["/v1/predict"]["post"]["responses"]["503"]["headers"]
    assert "Retry-After" in retry


def test_bearer_security_scheme(doc):
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API key from the server's operator"}
    assert doc["security"] == [{"bearerAuth": []}]  # every operation unless it says otherwise
    assert "security" not in doc["paths"]["/v1/predict"]["post"]
    assert doc["paths"]["/healthz"]["get"]["security"] == [{}, {"bearerAuth": []}]


def _statuses(client, service, images) -> dict[int, object]:
    """One real response per documented error status of POST /v1/predict."""
    octet = {**AUTH, "Content-Type": "application/octet-stream"}
    files = [(n, (f"{n}.nii.gz", nii_bytes(img), "application/gzip")) for n, img in images.items()]
    out = {
        400: client.post("/v1/predict", headers=octet, content=b"not a nifti" * 40),
        401: client.post("/v1/predict?format=xml"),
        413: client.post("/v1/predict", headers=octet, content=b"\0" * 400_000),
        415: client.post("/v1/predict", headers={**AUTH, "Content-Type": "text/plain"}, content=b"hi"),
        422: client.post("/v1/predict?format=xml", headers=AUTH, files=files),
    }
    held = service.budget.hold()
    held.resize(service.budget.capacity - 1024)  # the replica is full
    try:
        out[503] = client.post("/v1/predict", headers=AUTH, files=files)
    finally:
        held.release()
    return out


def test_real_error_responses_validate_against_the_document(client, service, doc, images, monkeypatch):
    responses = _statuses(client, service, images)

    async def crash(*_a, **_k):
        raise RuntimeError("secret /internal/path")

    monkeypatch.setattr(service, "segment", crash)
    responses[500] = client.post("/v1/predict", headers=AUTH, files=[
        (n, (f"{n}.nii.gz", nii_bytes(img), "application/gzip")) for n, img in images.items()])
    for status, r in responses.items():
        assert r.status_code == status, (status, r.text)
        jsonschema.validate(r.json(), _error_schema(doc, "/v1/predict", "post", status))
    assert responses[500].json() == {"detail": INTERNAL}  # no internals leak
    assert responses[422].json()["detail"] == "query.format: Input should be 'nifti', 'json' or 'zip' (got 'xml')"
    assert responses[503].headers["retry-after"] == "2" and responses[401].headers["www-authenticate"] == "Bearer"
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail: FastAPI's own 422 list shape
        jsonschema.validate({"detail": [{"loc": ["query"], "msg": "x"}]}, _error_schema(doc, "/v1/model", "get", 401))
    for path in ("/no/such/route", "/v1/model"):  # framework errors use the same shape
        r = client.get(path, headers=AUTH) if path != "/v1/model" else client.post(path, headers=AUTH)
        assert r.status_code in (404, 405) and set(r.json()) == {"detail"}


def test_docs_load_only_local_files(client):
    assert client.get("/docs").status_code == 401  # the page itself follows public_docs
    html = client.get("/docs", headers=AUTH).text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*['"]([^'"]+)['"]""", html)
    urls = [a or b for a, b in urls]
    assert len(urls) == 4 and "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        r = client.get(url, headers=AUTH if url == "/openapi.json" else {})  # Swagger UI's files need no key
        assert r.status_code == 200 and r.content, url
    assert "SwaggerUIBundle" in client.get("/docs/static/swagger-ui-bundle.js").text
    assert client.get("/docs/static/../../app.py").status_code in (401, 404)
    assert client.get("/redoc", headers=AUTH).status_code == 404  # ReDoc only exists from a CDN: not served


def test_docs_behind_a_route_prefix(service):
    with TestClient(build_app(service, public_docs=True), root_path="/seg") as c:
        html = c.get("/docs").text
    assert "/seg/docs/static/swagger-ui-bundle.js" in html and "url: '/seg/openapi.json'" in html

"""Auth on every deployment path: no keyless server unless the spec allows it on loopback; which routes need the
key; several keys (rotation); the key is checked before query validation."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from voxray.platform.errors import SpecError
from voxray.platform.specs.loader import validate_job
from voxray.serving.app import build_app
from voxray.serving.auth import MissingApiKey, authorized, key_digest, server_digests
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor

OLD, NEW = "old-key-1", "new-key-2"
ENV = "VOXRAY_TEST_AUTH_KEYS"


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return Predictor.from_registry(tiny_model)


def _client(predictor, digests, public_docs=False) -> TestClient:
    return TestClient(build_app(ModelService(predictor, Limits(), digests), public_docs=public_docs))


def _serve(**fields) -> dict:
    return {"kind": "serve", "name": "s", "serve": {"model": "/reg/m", **fields}}


def test_rotation_keys_from_one_env_var(monkeypatch):
    monkeypatch.setenv(ENV, f" {OLD}, {NEW} ,")
    digests = server_digests(ENV, False, "0.0.0.0")
    assert digests == (key_digest(OLD), key_digest(NEW))
    assert authorized(f"Bearer {OLD}", digests) and authorized(f"Bearer {NEW}", digests)
    assert not authorized("Bearer old-key", digests) and not authorized(f"Bearer {OLD},{NEW}", digests)


@pytest.mark.parametrize("value", [None, "", " , "])
def test_unset_or_empty_key_refused(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    with pytest.raises(MissingApiKey, match=ENV):
        server_digests(ENV, False, "127.0.0.1")


def test_anonymous_only_explicit_and_on_loopback():
    assert server_digests(None, True, "127.0.0.1") is None
    assert server_digests(None, True, "::1") is None
    for allow, host in [(False, "127.0.0.1"), (True, "0.0.0.0"), (True, "10.0.0.5"), (True, None)]:
        with pytest.raises(MissingApiKey, match="without an API key"):
            server_digests(None, allow, host)


@pytest.mark.parametrize("fields,problem", [
    ({"api_key_env": None}, "allow_anonymous is false"),
    ({"api_key_env": None, "allow_anonymous": True, "host": "0.0.0.0"}, "needs a loopback host"),
    ({"allow_anonymous": True}, "set api_key_env: null"),
])
def test_spec_refuses_ambiguous_or_exposed_anonymous(fields, problem):
    with pytest.raises(SpecError, match=problem):
        validate_job(_serve(**fields))
    assert validate_job(_serve(api_key_env=None, allow_anonymous=True, host="localhost")).serve.allow_anonymous


def test_rayservice_build_without_key_fails_clearly(tiny_model, monkeypatch):
    from voxray.platform.serve_app import build

    monkeypatch.delenv(ENV, raising=False)
    args = {"model": str(tiny_model.parent), "api_key_env": ENV}
    with pytest.raises(MissingApiKey, match=f"names '{ENV}'.*unset or empty"):
        build(args)
    with pytest.raises(SpecError, match="allow_anonymous is false"):
        build({"model": str(tiny_model.parent), "api_key_env": None})  # served anyone on 0.0.0.0 before
    anonymous = {"model": str(tiny_model.parent), "api_key_env": None, "allow_anonymous": True}
    with pytest.raises(MissingApiKey, match="bind address is set outside the spec"):
        build(anonymous)  # the RayService binds 0.0.0.0; this builder cannot see it, so never keyless
    monkeypatch.setenv(ENV, NEW)
    from ray.serve import Application

    from voxray.platform.specs.serve import ServeSpec
    from voxray.serving.runner import replica_config

    assert isinstance(build(args), Application)
    cfg = replica_config(ServeSpec.model_validate(args), host=None)
    assert cfg.key_digests == (key_digest(NEW),) and NEW not in repr(cfg)  # the digest travels, not the key


def test_cli_serve_refuses_before_starting_ray(tiny_model, monkeypatch, capsys):
    from voxray.platform.cli.app import main

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr("voxray.platform.stages.run_job", lambda *a, **k: pytest.fail("Ray must not start"))
    def said() -> str:
        out = capsys.readouterr()
        return " ".join((out.out + out.err).split())

    assert main(["serve", str(tiny_model.parent), "--host", "0.0.0.0", "--allow-anonymous"]) == 2
    assert "needs a loopback host" in said()
    assert main(["serve", str(tiny_model.parent), "--api-key-env", ENV]) == 2
    assert f"names '{ENV}'" in said()


def test_pipeline_refuses_before_its_first_stage(monkeypatch, tmp_path):
    from voxray.platform.pipeline import run_pipeline

    monkeypatch.delenv(ENV, raising=False)
    job = validate_job({"kind": "pipeline", "name": "p", "train": {"store": str(tmp_path / "missing.zarr")},
                        "serve": {"api_key_env": ENV}}, base_dir=tmp_path)
    with pytest.raises(MissingApiKey, match=ENV):
        run_pipeline(job)  # raises before the train stage would touch the (missing) store


def test_routes_need_the_key_before_anything_else(predictor):
    auth = {"Authorization": f"Bearer {NEW}"}
    with _client(predictor, [key_digest(OLD), key_digest(NEW)]) as c:
        assert c.post("/v1/predict?format=xml").status_code == 401  # 422 before: query validated first
        for path in ("/docs", "/openapi.json", "/redoc", "/v1/model", "/no/such/route"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ready"}  # no model name or version without a key
        assert c.get("/readyz", headers=auth).json() == {"status": "ready", "model": "tiny", "version": 1}
        assert c.get("/openapi.json", headers=auth).status_code == 200
        assert c.get("/docs", headers={"Authorization": f"Bearer {OLD}"}).status_code == 200
        assert c.post("/v1/predict?format=xml", headers=auth).status_code == 422  # with the key: validated
        assert "tiny" not in c.get("/openapi.json", headers=auth).text  # the schema does not name the model


def test_public_docs_and_anonymous(predictor):
    with _client(predictor, [key_digest(NEW)], public_docs=True) as c:
        assert c.get("/openapi.json").status_code == 200 and c.get("/docs").status_code == 200
        assert c.get("/v1/model").status_code == 401
    with _client(predictor, None) as c:  # anonymous (loopback only, see above)
        assert c.get("/v1/model").json()["name"] == "tiny"
        assert c.get("/readyz").json()["model"] == "tiny"

"""The storage check that runs before Ray: a missing bucket, refused credentials and an unreachable endpoint each
fail at once with the spec field, the URI and the cause; credentials never enter a spec. Against a real S3 server
(SeaweedFS, tests/_s3server.py) with auth on."""

from __future__ import annotations

import time

import pytest

from voxray.platform.errors import SpecError
from voxray.platform.specs.loader import validate_job
from voxray.platform.stages import run_job
from voxray.platform.storage import StorageError, check_storage, check_uri

pytestmark = pytest.mark.slow


def _train_job(tmp_path, store: str, output: str):
    return validate_job({"kind": "train", "name": "pf", "train": {
        "store": store, "task": "brats_regions", "model": {"name": "unet", "channels": [8, 16]}, "patch": [16, 16, 16],
        "output": output, "registry": output + "/registry"}}, base_dir=tmp_path)


def test_server_speaks_authenticated_s3(s3_server, s3_bucket):
    """The fixture is a real S3 endpoint: signed requests work through fsspec, wrong keys are refused."""
    import fsspec
    import s3fs

    fs, path = fsspec.core.url_to_fs(f"{s3_bucket}/a/b.txt")
    fs.pipe_file(path, b"voxray")
    assert fs.cat_file(path) == b"voxray"
    wrong = s3fs.S3FileSystem(key=s3_server.access_key, secret="not-the-secret", endpoint_url=s3_server.endpoint,
                              skip_instance_cache=True)
    with pytest.raises(PermissionError):
        wrong.cat_file(path)
    check_uri(f"{s3_bucket}/anything", "train.output")  # bucket there, credentials good: no error


def test_missing_bucket_names_field_uri_and_cause(s3_server, tmp_path):
    job = _train_job(tmp_path, "s3://vx-no-such-bucket/brats.zarr", str(tmp_path / "runs"))
    with pytest.raises(StorageError) as err:
        check_storage(job)
    text = str(err.value)
    assert "train.store" in text and "s3://vx-no-such-bucket/brats.zarr" in text and "does not exist" in text
    assert s3_server.endpoint in text and "aws s3 mb s3://vx-no-such-bucket" in err.value.hint


def test_bad_credentials_are_refused_before_ray(s3_bucket, tmp_path, monkeypatch):
    """run_job checks storage first: the error comes before Ray would start (no Ray is needed for this test)."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    job = _train_job(tmp_path, f"{s3_bucket}/brats.zarr", f"{s3_bucket}/runs")
    t0 = time.monotonic()
    with pytest.raises(StorageError) as err:
        run_job(job)
    text = str(err.value)
    assert "train.store" in text and f"{s3_bucket}/brats.zarr" in text
    assert "rejected the credentials" in text and "SignatureDoesNotMatch" in text and "environment" in text
    assert "wrong-secret" not in text and "AWS_ACCESS_KEY_ID" in err.value.hint
    assert time.monotonic() - t0 < 10


def test_no_credentials_at_all(s3_bucket, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError, match="no S3 credentials found"):
        check_uri(f"{s3_bucket}/x", "preprocess.store")


def test_named_profile_supplies_credentials(s3_server, s3_bucket, monkeypatch, tmp_path):
    """AWS_PROFILE + a credentials file is the other allowed source; a wrong secret there is reported as such."""
    creds = tmp_path / "credentials"
    creds.write_text(f"[vx]\naws_access_key_id = {s3_server.access_key}\n"
                     f"aws_secret_access_key = {s3_server.secret_key}\n[bad]\naws_access_key_id = "
                     f"{s3_server.access_key}\naws_secret_access_key = nope\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_PROFILE", "vx")
    check_uri(f"{s3_bucket}/x", "train.output")
    monkeypatch.setenv("AWS_PROFILE", "bad")
    with pytest.raises(StorageError, match="profile 'bad'"):
        check_uri(f"{s3_bucket}/x", "train.output")


def test_unreachable_endpoint(monkeypatch, tmp_path):
    from _s3server import _free_ports

    port = _free_ports(1)[0]  # nothing listens here
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    job = validate_job({"kind": "preprocess", "name": "pf", "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(tmp_path)}, "store": "s3://vx-data/brats.zarr"}},
        base_dir=tmp_path)
    t0 = time.monotonic()
    with pytest.raises(StorageError) as err:
        check_storage(job)
    text = str(err.value)
    assert "preprocess.store: s3://vx-data/brats.zarr" in text and f"127.0.0.1:{port}" in text
    assert "cannot reach" in text and "AWS_ENDPOINT_URL" in err.value.hint
    assert time.monotonic() - t0 < 30


def test_credentials_in_a_uri_are_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="must not carry credentials"):
        validate_job({"kind": "preprocess", "name": "pf", "preprocess": {
            "dataset": {"layout": "msd_brats", "root": str(tmp_path)},
            "store": "s3://AKIA:secret@bucket/brats.zarr"}}, base_dir=tmp_path)

"""Submission logic without a cluster: path checks, runtime_env, secrets by name, token lookup, the thin wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from voxray.platform import cluster, paths
from voxray.platform.errors import SpecError, VoxrayError
from voxray.platform.packaging import build_wheel, thin_wheel, wheel_requirements

REPO = Path(__file__).resolve().parents[2]


def _job(tmp_path: Path, body: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body)
    return path


PREPROCESS_SHARED = """kind: preprocess
name: shared
preprocess:
  dataset: {layout: msd_brats, root: s3://bucket/raw/msd}
  store: s3://bucket/work/brats.zarr
"""


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize("uri,proto,remote", [
    ("/data/x.zarr", "file", False), ("rel/x", "file", False), ("file:///data/x", "file", False),
    ("s3://b/k", "s3", True), ("gs://b/k", "gs", True), ("memory://x", "memory", False),
    ("C:\\data\\x", "file", False),
])
def test_protocol_and_is_remote(uri, proto, remote):
    assert paths.protocol(uri) == proto
    assert paths.is_remote(uri) is remote


def test_open_fs_roundtrip_and_join(tmp_path):
    fs, root = paths.open_fs(f"file://{tmp_path}")
    fs.pipe(paths.join(root, "a", "b.txt"), b"hi")
    assert (tmp_path / "a" / "b.txt").read_bytes() == b"hi"
    assert paths.join("s3://bucket/", "runs", "x") == "s3://bucket/runs/x"
    assert paths.join("/srv/data", "x") == "/srv/data/x"


def test_open_fs_missing_backend_names_package():
    with pytest.raises(VoxrayError) as err:
        paths.open_fs("gs://bucket/x")  # gcsfs is not installed here
    assert "gcsfs" in err.value.hint


@pytest.mark.parametrize("address,loop", [
    ("http://127.0.0.1:8265", True), ("http://localhost:8265", True), ("auto", True),
    ("http://head.cluster.local:8265", False), ("http://10.0.0.5:8265", False), ("ray://10.0.0.5:10001", False),
])
def test_loopback_address(address, loop):
    assert paths.is_loopback_address(address) is loop


def test_relative_paths_are_fatal_and_named(tmp_path):
    job = _job(tmp_path, """kind: pipeline
name: rel
preprocess: {dataset: {layout: msd_brats, root: data/msd}, store: work/x.zarr}
train: {output: s3://b/runs}
""")
    with pytest.raises(SpecError) as err:
        cluster.prepare_submission(job, address="http://10.0.0.5:8265", staging=tmp_path / "stage")
    text = str(err.value)
    assert "preprocess.dataset.root: 'data/msd' is relative" in text
    assert "preprocess.store: 'work/x.zarr' is relative" in text
    # train.registry was left out: its default ("registry", next to the YAML) is just as driver-only
    assert "train.registry: 'registry' (the default) is relative" in text
    assert "train.output" not in text
    assert "s3://" in err.value.hint


def test_memory_uri_fatal_and_local_abs_warns_only_for_remote(tmp_path):
    job = _job(tmp_path, f"""kind: preprocess
name: loc
preprocess: {{dataset: {{layout: msd_brats, root: {tmp_path}/raw}}, store: memory://x.zarr}}
""")
    with pytest.raises(SpecError, match=r"preprocess.store: 'memory://x.zarr' lives inside one process"):
        cluster.prepare_submission(job, address="http://127.0.0.1:8265", staging=tmp_path / "s")
    ok = cluster.prepare_submission(job, address="http://127.0.0.1:8265", staging=tmp_path / "s",
                                    overrides=[f"preprocess.store={tmp_path}/x.zarr"])
    assert ok.warnings == []  # loopback cluster: this machine's paths are every node's paths
    far = cluster.prepare_submission(job, address="http://10.1.2.3:8265", staging=tmp_path / "s2",
                                     overrides=[f"preprocess.store={tmp_path}/x.zarr"])
    assert len(far.warnings) == 2 and all("shared filesystem" in w for w in far.warnings)


# ---------------------------------------------------------------- the submission itself


def test_prepare_submission_ships_yaml_as_written_and_secrets_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXRAY_API_KEY", "s3cret")
    body = PREPROCESS_SHARED.replace("name: shared", "name: shared\n# key: ${VOXRAY_API_KEY}")
    job = _job(tmp_path, body)
    sub = cluster.prepare_submission(job, address="http://10.0.0.5:8265", staging=tmp_path / "stage",
                                     overrides=["preprocess.max_cases=3"], env_var_names=["VOXRAY_API_KEY"],
                                     wheel=tmp_path / "voxray-0.1.0+abc-py3-none-any.whl")
    shipped = Path(sub.runtime_env["working_dir"]) / "job.yaml"
    assert shipped.read_text() == body  # never interpolated: the secret is not inside the upload
    assert "s3cret" not in shipped.read_text()
    assert sub.runtime_env["env_vars"] == {"VOXRAY_API_KEY": "s3cret"}
    assert sub.runtime_env["py_modules"] == [str(tmp_path / "voxray-0.1.0+abc-py3-none-any.whl")]
    assert sub.entrypoint == ("python -m voxray.platform.cli.app run job.yaml --address auto "
                              "--set preprocess.max_cases=3")
    assert sub.submission_id.startswith("voxray-shared-")
    assert sub.artefacts == {"preprocess.dataset.root": "s3://bucket/raw/msd",
                             "preprocess.store": "s3://bucket/work/brats.zarr"}
    assert sub.metadata["voxray.kind"] == "preprocess" and "brats.zarr" in sub.metadata["voxray.artefacts"]


def test_env_var_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("VOXRAY_NOT_SET", raising=False)
    with pytest.raises(VoxrayError, match="not set in this shell"):
        cluster.env_values(["VOXRAY_NOT_SET"])
    with pytest.raises(VoxrayError, match="NAME, not a value"):
        cluster.env_values(["KEY=value"])


def test_unset_env_ref_validates_with_placeholder(tmp_path, monkeypatch):
    """${VAR} unset here may be set on the cluster (a Kubernetes secret): validation must not need its value."""
    monkeypatch.delenv("CLUSTER_ONLY", raising=False)
    job = _job(tmp_path, PREPROCESS_SHARED.replace("s3://bucket/work", "s3://${CLUSTER_ONLY}/work"))
    sub = cluster.prepare_submission(job, address="http://10.0.0.5:8265", staging=tmp_path / "s")
    assert "${CLUSTER_ONLY}" in (Path(sub.runtime_env["working_dir"]) / "job.yaml").read_text()


def test_address_must_be_dashboard_url():
    with pytest.raises(cluster.ClusterError, match="dashboard URL"):
        cluster.make_client("10.0.0.5:6379")


def test_unreachable_cluster_is_a_clear_error():
    with pytest.raises(cluster.ClusterError, match="cannot reach the Ray Jobs API"):
        cluster.make_client("http://127.0.0.1:9")


def test_auth_token_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert cluster.auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert cluster.auth_token() == "from-home"
    (tmp_path / "tok").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert cluster.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert cluster.auth_token() == "from-env"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert cluster.auth_token() is None
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(cluster.ClusterError, match="RAY_AUTH_TOKEN_PATH"):
        cluster.auth_token()


def test_cli_submit_rejects_relative_paths_before_contacting_cluster(tmp_path):
    job = _job(tmp_path, "kind: preprocess\nname: x\npreprocess: {dataset: {layout: msd_brats, root: d}, "
                         "store: s.zarr}\n")
    proc = subprocess.run([sys.executable, "-m", "voxray.platform.cli.app", "submit", str(job),
                           "--address", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "preprocess.store: 's.zarr' is relative" in proc.stderr
    assert "cannot reach" not in proc.stderr


# ---------------------------------------------------------------- the thin wheel


def test_thin_wheel_has_no_requirements_and_a_content_version(tmp_path):
    wheel = build_wheel(tmp_path / "w", root=REPO)
    assert wheel_requirements(wheel) == []
    assert wheel.name.startswith("voxray-0.1.0+") and wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "voxray/platform/cluster.py" in names
    assert not any(n.startswith("platform/") for n in names)  # mapped onto voxray.*, never a top-level `platform`
    # pip accepts it offline (RECORD hashes valid) and installs nothing else
    target = tmp_path / "target"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                           f"--target={target}", str(wheel)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name.split("-")[0] for p in target.iterdir() if p.name != "bin") == ["voxray", "voxray"]


def test_thin_wheel_version_changes_with_content(tmp_path):
    def fake(name: str, payload: bytes) -> Path:
        path = tmp_path / name / "voxray-0.1.0-py3-none-any.whl"
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("voxray/platform/x.py", payload)
            zf.writestr("voxray-0.1.0.dist-info/METADATA",
                        "Metadata-Version: 2.1\nName: voxray\nVersion: 0.1.0\nRequires-Dist: torch>=2.4\n")
            zf.writestr("voxray-0.1.0.dist-info/RECORD", "")
        return thin_wheel(path)

    a, b, a2 = fake("a", b"x = 1\n"), fake("b", b"x = 2\n"), fake("a2", b"x = 1\n")
    assert a.name != b.name  # Ray skips re-uploading a wheel whose name it already has
    assert a.name == a2.name  # same content → same name → Ray reuses the cached upload
    with zipfile.ZipFile(a) as zf:
        meta = zf.read(a.name.removesuffix("-py3-none-any.whl") + ".dist-info/METADATA").decode()
    assert "Requires-Dist" not in meta and f"Version: {a.name.split('-')[1]}" in meta

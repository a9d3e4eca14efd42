"""infra/: Dockerfiles, KubeRay manifests and the `ray up` YAML, checked for the fields voxray relies on.

No Docker engine or Kubernetes here: the files are parsed and cross-checked against the code (package folders,
entrypoint module, Serve builder). `docker build` runs only with VOXRAY_DOCKER_BUILD=1 and a reachable engine.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from voxray.platform.errors import SpecError, VoxrayError

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
RAY_SERIES = "2.60."


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def ray_docs(path: Path) -> list[dict]:
    return [d for d in load_docs(path) if d["apiVersion"].startswith("ray.io/")]


def cluster_spec(doc: dict) -> dict:
    spec = doc["spec"]
    return {"RayCluster": spec, "RayJob": spec.get("rayClusterSpec"), "RayService": spec.get("rayClusterConfig")}[
        doc["kind"]]


def groups(cspec: dict) -> list[tuple[str, dict]]:
    return [("head", cspec["headGroupSpec"])] + [(g["groupName"], g) for g in cspec["workerGroupSpecs"]]


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("name,kind", [("raycluster.yaml", "RayCluster"), ("rayjob.yaml", "RayJob"),
                                       ("rayservice.yaml", "RayService")])
def test_kuberay_manifest_fields(name, kind):
    docs = ray_docs(INFRA / "kuberay" / name)
    assert [d["kind"] for d in docs] == [kind]
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1"
    cspec = cluster_spec(doc)
    assert cspec["rayVersion"].startswith(RAY_SERIES)
    assert cspec["enableInTreeAutoscaling"] is True
    gpu_groups = 0
    for gname, group in groups(cspec):
        if gname != "head":
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], gname
        for c in containers(group):
            image, tag = c["image"].rsplit(":", 1)
            assert image.endswith("/voxray") and tag.startswith("0.1.0-"), c["image"]
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token"
            assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]  # never a literal token in a manifest
            gpus = c["resources"]["limits"].get("nvidia.com/gpu")
            if gpus is not None:
                gpu_groups += 1
                assert int(gpus) >= 1 and c["resources"]["requests"]["nvidia.com/gpu"] == gpus
                assert "-cu" in tag, "GPU pods need the CUDA image (infra/Dockerfile.cuda)"
            else:
                assert tag.endswith("-cpu")
        if gname == "head":
            assert group["rayStartParams"]["num-cpus"] == "0"
            assert group["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert gpu_groups >= 1


def test_raycluster_shares_storage_across_pods():
    docs = load_docs(INFRA / "kuberay" / "raycluster.yaml")
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for _, group in groups(cluster_spec(ray_docs(INFRA / "kuberay" / "raycluster.yaml")[0])):
        claims = [v["persistentVolumeClaim"]["claimName"] for v in group["template"]["spec"]["volumes"]
                  if "persistentVolumeClaim" in v]
        assert claims == [pvc["metadata"]["name"]]
        assert any(m["mountPath"] == "/mnt/shared" for c in containers(group) for m in c["volumeMounts"])


def test_rayjob_runs_voxray_on_the_mounted_job_yaml():
    doc = ray_docs(INFRA / "kuberay" / "rayjob.yaml")[0]
    entry = doc["spec"]["entrypoint"].split()
    assert entry[:2] == ["voxray", "run"] and entry[-2:] == ["--address", "auto"]
    job_file = Path(entry[2])
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    assert str(job_file.parent) == mounts["job"]
    assert any(v["name"] == "job" and "configMap" in v for v in head["volumes"])
    assert doc["spec"]["shutdownAfterJobFinishes"] is True
    yaml.safe_load(doc["spec"]["runtimeEnvYAML"])


def test_rayservice_serves_through_the_voxray_builder():
    doc = ray_docs(INFRA / "kuberay" / "rayservice.yaml")[0]
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    app = serve_cfg["applications"][0]
    module, _, attr = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    from voxray.platform.specs.serve import ServeSpec

    spec = ServeSpec.model_validate(app["args"])  # the args are a valid `serve:` section
    assert spec.model.startswith("/mnt/shared/") and spec.api_key_env == "VOXRAY_API_KEY"
    envs = {e["name"] for _, g in groups(cluster_spec(doc)) for c in containers(g) for e in c["env"]}
    assert "VOXRAY_API_KEY" in envs
    assert serve_cfg["http_options"]["host"] == "0.0.0.0"


def test_serve_builder_rejects_bad_args():
    from voxray.platform.serve_app import build

    with pytest.raises(VoxrayError, match="absolute path or a URI"):
        build({"model": "registry/brats"})
    with pytest.raises(SpecError, match="unknown key"):
        build({"model": "/mnt/shared/registry/x", "replicas": 3})


@pytest.mark.slow  # imports torch + MONAI + Serve (~25 s on a loaded 2-core box)
def test_serve_builder_binds_a_real_registry_model(tmp_path, monkeypatch):
    import torch

    from voxray.platform.serve_app import build
    from voxray.preprocessing.transforms import TransformConfig
    from voxray.training.registry import build_from_card, export_model

    card = {"model": {"name": "unet", "channels": [4, 8], "num_res_units": 0}, "spatial_dims": 3,
            "patch": [16, 16, 16], "in_channels": 1, "channels": ["t1"], "out_channels": 2, "task": "labels",
            "labels": {0: "background", 1: "lesion"}, "label_encoding": "index", "regions": None,
            "slice_axis": None, "preprocess": TransformConfig().to_dict(), "metrics": {}, "source": {}}
    torch.manual_seed(0)
    export_model(build_from_card(card), card, tmp_path, "m")
    monkeypatch.setenv("VOXRAY_API_KEY", "k")
    app = build({"model": str(tmp_path / "m"), "autoscaling": {"min_replicas": 1, "max_replicas": 3}})
    from ray.serve import Application

    assert isinstance(app, Application)


def _dockerfile(name: str) -> str:
    return (INFRA / name).read_text()


@pytest.mark.parametrize("name,variant", [("Dockerfile", "cpu"), ("Dockerfile.cuda", "cu")])
def test_dockerfiles(name, variant):
    text = _dockerfile(name)
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert ray_version.startswith(RAY_SERIES)
    base = re.search(r"^FROM (\S+)$", text, re.M).group(1)
    assert base.startswith("rayproject/ray:${RAY_VERSION}-py311-") and "ray-ml" not in base
    assert ("-cpu" in base) == (variant == "cpu")
    pins = re.search(r'"torch==\$\{TORCH_VERSION\}"', text)
    assert pins and text.index("torch==") < text.index("pip install --no-cache-dir ."), "torch before voxray"
    assert ("whl/cpu" in text) == (variant == "cpu")
    package_dir = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for folder in package_dir.values():  # every source folder voxray maps onto voxray.* gets into the image
        assert re.search(rf"^COPY .* {folder} \./{folder}$", text, re.M), folder


def test_ray_up_cluster_yaml():
    cfg = yaml.safe_load((INFRA / "ray-up" / "cluster.yaml").read_text())
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types and types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert sum(t.get("max_workers", 0) for t in types.values()) <= cfg["max_workers"]
    assert cfg["docker"]["image"].endswith("-cpu") and "-cu" in cfg["docker"]["worker_image"]
    assert any("--gpus all" in o for o in types["gpu_worker"]["docker"]["worker_run_options"])
    assert any("RAY_AUTH_MODE=token" in o for o in cfg["docker"]["run_options"])
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VOXRAY_DOCKER_BUILD") != "1", reason="set VOXRAY_DOCKER_BUILD=1 to build images")
def test_docker_build_cpu_image():
    if not _docker_engine():
        pytest.skip("no Docker engine reachable (the docker CLI alone cannot build)")
    proc = subprocess.run(["docker", "build", "-f", "infra/Dockerfile", "-t", "voxray:test-cpu", "."], cwd=REPO,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]

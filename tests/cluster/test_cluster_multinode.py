"""`voxray submit` against a real 2-node Ray cluster on this machine: a preprocess + DDP-train pipeline lands on
both nodes, artefacts are complete, the token is required, and a worker node killed mid-preprocessing does not fail the job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VOXRAY = [sys.executable, "-m", "voxray.platform.cli.app"]
CONVERT_TASK_WORDS = ("Map(prepare)", "Write")


def voxray(cluster, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*VOXRAY, *args], env=env or cluster.env, capture_output=True, text=True,
                          timeout=timeout, cwd=cluster.root)


def status_json(cluster, job_id: str) -> dict:
    proc = voxray(cluster, "status", job_id, "--address", cluster.dashboard_url, "--json", "--tail", "200")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def job_id_of(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("submitted "))
    return line.split()[1]


def write_job(tmp: Path, name: str, data: Path, store: Path, cases: int) -> Path:
    job = tmp / f"{name}.yaml"
    job.write_text(f"""kind: preprocess
name: {name}
preprocess:
  dataset: {{layout: msd_brats, root: {data}}}
  store: {store}
  chunk: [16, 16, 16]
  max_cases: {cases}
  memory_per_case_mb: 256
""")
    return job


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from voxray.preprocessing.synth import synth_dataset

    return synth_dataset("msd_brats", tmp_path_factory.mktemp("msd"), cases=6, seed=3, shape=(40, 40, 24))


def convert_tasks(cluster, ray_job_id: str) -> list[dict]:
    return [t for t in cluster.tasks(ray_job_id) if any(w in t.get("name", "") for w in CONVERT_TASK_WORDS)]


def assert_store_complete(store: Path, n: int) -> None:
    from voxray.preprocessing.store.reader import Store

    s = Store.open(str(store))
    assert len(s.case_ids()) == n, s.manifest().to_pylist()
    assert set(s.manifest().column("status").to_pylist()) == {"ok"}
    for case_id in s.case_ids():
        image = s.image(case_id)
        assert image.shape[0] == 4 and image[:].std() > 0  # 4 MSD modalities, real pixels written
    assert (store / "job.resolved.yaml").is_file()


def test_token_is_required(ray_cluster):
    env = {**ray_cluster.env, "RAY_AUTH_MODE": "disabled"}  # voxray then sends no token
    proc = voxray(ray_cluster, "status", "--address", ray_cluster.dashboard_url, env=env, timeout=60)
    assert proc.returncode == 1
    assert "refused the token" in proc.stderr and "auth_token" in proc.stderr
    ok = voxray(ray_cluster, "status", "--address", ray_cluster.dashboard_url, "--json", timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert isinstance(json.loads(ok.stdout), list)


PIPELINE_TRAIN = """train:
  task: brats_regions
  model: {{name: unet, channels: [8, 16], num_res_units: 1}}
  patch: [16, 16, 16]
  batch_size: 1
  steps: 4
  optimizer: {{lr: 3.0e-3}}
  schedule: {{name: constant}}
  validation: {{every: 4, folds: 2, max_cases: 1}}
  checkpoint: {{every: 4}}
  scaling: {{num_workers: 2, cpus_per_worker: 1}}
  sampling: {{loader_workers: 1}}
  augment: {{enabled: false}}
  tracking: {{mlflow: false}}
  output: {out}/runs
  registry: {out}/registry
"""


def test_submit_pipeline_runs_on_both_nodes(ray_cluster, dataset, tmp_path):
    """preprocess (Ray Data tasks on both nodes) → 2-rank DDP training (one rank per node: 1 CPU each) → export."""
    store = tmp_path / "brats.zarr"
    job = write_job(tmp_path, "mn-pipe", dataset, store, cases=4)
    text = job.read_text().replace("kind: preprocess", "kind: pipeline")
    job.write_text(text + PIPELINE_TRAIN.format(out=tmp_path))
    t0 = time.perf_counter()
    proc = voxray(ray_cluster, "submit", str(job), "--address", ray_cluster.dashboard_url, "--follow", timeout=420)
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    job_id = job_id_of(proc.stdout)
    assert "SUCCEEDED" in proc.stdout and "cases_ok" in proc.stdout  # followed logs include the run summary
    info = status_json(ray_cluster, job_id)
    assert info["state"] == "SUCCEEDED" and info["kind"] == "pipeline"
    assert info["artefacts"]["preprocess.store"] == str(store)
    assert info["artefacts"]["train.registry"] == str(tmp_path / "registry")
    node_b = ray_cluster.node_id_with("node_b")
    tasks = convert_tasks(ray_cluster, info["ray_job_id"])
    nodes = {t["node_id"] for t in tasks if t["state"] == "FINISHED"}
    assert node_b in nodes and len(nodes) == 2, tasks
    ranks = [a for a in ray_cluster.actors(info["ray_job_id"]) if "TrainWorker" in a.get("class_name", "")]
    assert {a["node_id"] for a in ranks} >= {node_b}, ranks  # DDP spans the two nodes
    assert_store_complete(store, 4)
    versions = list((tmp_path / "registry" / "mn-pipe").iterdir())
    assert [v.name for v in versions] == ["1"] and (versions[0] / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "mn-pipe" / "job.resolved.yaml").is_file()
    # the job ran the shipped wheel (content-hashed version), installed on the cluster's nodes
    installed = list(ray_cluster.root.glob("*/session_*/runtime_resources/py_modules_files/voxray-*/voxray-*"
                                           ".dist-info"))
    assert installed and all("+" in p.name for p in installed)
    print(f"pipeline submit → SUCCEEDED in {elapsed:.1f} s on {len(nodes)} nodes")
    if os.environ.get("VOXRAY_TEST_VERBOSE"):
        print(proc.stdout, proc.stderr)


def _ray_job_id(cluster, job_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rid := status_json(cluster, job_id).get("ray_job_id"):
            return rid
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} got no Ray job id within {timeout} s")


def _wait_task_on(cluster, ray_job_id: str, node_id: str, timeout: float) -> None:
    """Until node_id has taken a conversion task (running, or already done while the job still runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(t["node_id"] == node_id and t["state"] in ("RUNNING", "FINISHED")
               for t in convert_tasks(cluster, ray_job_id)):
            return
        time.sleep(0.1)
    raise TimeoutError(f"no conversion task ran on node {node_id[:8]} within {timeout} s")


@pytest.fixture(scope="module")
def big_dataset(tmp_path_factory) -> Path:
    """Cases large enough (4×128×128×96) that a conversion takes seconds, so the kill lands mid-run."""
    from voxray.preprocessing.synth import synth_dataset

    return synth_dataset("msd_brats", tmp_path_factory.mktemp("msd_big"), cases=8, seed=4, shape=(128, 128, 96))


def test_worker_node_dies_mid_preprocessing(ray_cluster, big_dataset, tmp_path):
    """SIGKILL node_b's raylet while it converts a case: Ray retries the task on the head; all cases land."""
    node_b = next(n for n in ray_cluster.nodes if n.name == "node_b")
    node_b_id = ray_cluster.node_id_with("node_b")
    store = tmp_path / "brats.zarr"
    job = write_job(tmp_path, "mn-kill", big_dataset, store, cases=8)
    proc = voxray(ray_cluster, "submit", str(job), "--address", ray_cluster.dashboard_url)
    assert proc.returncode == 0, proc.stderr
    job_id = job_id_of(proc.stdout)
    _wait_task_on(ray_cluster, _ray_job_id(ray_cluster, job_id, 120), node_b_id, 120)
    assert status_json(ray_cluster, job_id)["state"] == "RUNNING", "the job finished before node_b could be killed"
    raylet = node_b.raylet_pid()
    assert raylet is not None
    os.kill(raylet, 9)
    node_b.kill()  # its workers and agents go too, as when a VM disappears
    deadline = time.monotonic() + 180
    while (state := status_json(ray_cluster, job_id)["state"]) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, "job did not finish after the node died"
        time.sleep(1)
    info = status_json(ray_cluster, job_id)
    assert state == "SUCCEEDED", "\n".join(info["logs_tail"])
    assert node_b_id not in {n["node_id"] for n in ray_cluster.alive_nodes()}
    assert_store_complete(store, 8)

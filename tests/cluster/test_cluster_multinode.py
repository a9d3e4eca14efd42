"""`voxray submit` against a real 2-node Ray cluster on this machine: a preprocess → DDP-train → export → serve
pipeline whose nodes share nothing but S3 lands on both nodes, artefacts are complete, the token is required, and a
worker node killed mid-preprocessing does not fail the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

VOXRAY = [sys.executable, "-m", "voxray.platform.cli.app"]
CONVERT_TASK_WORDS = ("Map(prepare)", "Write")


def voxray(cluster, *args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([*VOXRAY, *args], env=env or cluster.env, capture_output=True, text=True,
                              timeout=timeout, cwd=cluster.root)
    except subprocess.TimeoutExpired as exc:  # say what the job was doing, not only that it ran out of time
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        raise AssertionError(f"voxray {args[0]} ran past {timeout} s; its output ended with:\n{out[-6000:]}") from None


def status_json(cluster, job_id: str) -> dict:
    proc = voxray(cluster, "status", job_id, "--address", cluster.dashboard_url, "--json", "--tail", "200")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def job_id_of(stdout: str) -> str:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("submitted "))
    return line.split()[1]


def write_job(tmp: Path, name: str, data: str, store: str, cases: int) -> Path:
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


def assert_store_complete(store: str, n: int) -> None:
    from voxray.platform import storage
    from voxray.preprocessing.store.reader import Store

    s = Store.open(store)
    assert len(s.case_ids()) == n, s.manifest().to_pylist()
    assert set(s.manifest().column("status").to_pylist()) == {"ok"}
    for case_id in s.case_ids():
        image = s.image(case_id)
        assert image.shape[0] == 4 and image[:].std() > 0  # 4 MSD modalities, real pixels written
    assert storage.exists(f"{store}/job.resolved.yaml")


def test_token_is_required(ray_cluster):
    env = {**ray_cluster.env, "RAY_AUTH_MODE": "disabled"}  # voxray then sends no token
    proc = voxray(ray_cluster, "status", "--address", ray_cluster.dashboard_url, env=env, timeout=60)
    assert proc.returncode == 1
    assert "refused the token" in proc.stderr and "auth_token" in proc.stderr
    ok = voxray(ray_cluster, "status", "--address", ray_cluster.dashboard_url, "--json", timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert isinstance(json.loads(ok.stdout), list)


S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION")
SERVE_KEY_ENV = "VOXRAY_TEST_MN_SERVE_KEY"


def s3_pipeline_head(name: str, bucket: str) -> str:
    """The start of a pipeline that reads the dataset from S3 and writes its store there (4 cases)."""
    return f"""kind: pipeline
name: {name}
preprocess:
  dataset: {{layout: msd_brats, root: {bucket}/data/msd}}
  store: {bucket}/work/brats.zarr
  chunk: [16, 16, 16]
  max_cases: 4
  memory_per_case_mb: 256
"""


def share_nothing_job(tmp: Path, name: str, bucket: str, port: int) -> Path:
    """A pipeline whose every artefact path (dataset included) is on S3: no node reads another's disk."""
    job = tmp / f"{name}.yaml"
    job.write_text(s3_pipeline_head(name, bucket) + f"""train:
  task: brats_regions
  model: {{name: unet, channels: [8, 16], num_res_units: 1}}
  patch: [16, 16, 16]
  batch_size: 1
  steps: 4
  optimizer: {{lr: 3.0e-3}}
  schedule: {{name: constant}}
  validation: {{every: 4, folds: 2, max_cases: 2}}
  checkpoint: {{every: 4}}
  scaling: {{num_workers: 2, cpus_per_worker: 1}}
  sampling: {{loader_workers: 1}}
  augment: {{enabled: false}}
  tracking: {{mlflow: false}}
  output: {bucket}/runs
  registry: {bucket}/registry
serve:
  model: __pipeline__
  port: {port}
  api_key_env: {SERVE_KEY_ENV}
  num_cpus: 0.5
  blocking: false
""")
    return job


def _stop_serve(cluster) -> None:
    """Serve outlives the job that started it: stop it with a one-line job, so the node CPUs are free again."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url,
                                 headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"})
    job_id = client.submit_job(entrypoint=f"{sys.executable} -c 'import ray; from ray import serve; ray.init(); "
                                          "serve.shutdown()'")
    deadline = time.monotonic() + 120
    while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        assert time.monotonic() < deadline, "serve.shutdown job did not finish"
        time.sleep(0.5)


def test_share_nothing_pipeline_on_both_nodes(ray_cluster, s3_server, dataset, tmp_path):
    """Nodes share only S3 (each its own cache, temp and working dir; credentials only via --env-var): the dataset
    is read from S3 by conversion tasks on both nodes, 2-rank DDP spans the nodes and checkpoints to S3, the model
    is exported to an S3 registry and served from it (a smoke request answers)."""
    import fsspec

    from voxray.preprocessing.store.reader import Store
    from voxray.serving.client import Client
    from voxray.training.registry import list_versions

    bucket = f"s3://{s3_server.create_bucket()}"
    fs, path = fsspec.core.url_to_fs(f"{bucket}/data/msd")
    fs.put(str(dataset) + "/", path, recursive=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    job = share_nothing_job(tmp_path, "mn-s3", bucket, port)
    env = {**ray_cluster.env, **{k: os.environ[k] for k in S3_ENV}, SERVE_KEY_ENV: "mn-serve-key-0123456789"}
    env_args = [a for name in (*S3_ENV, SERVE_KEY_ENV) for a in ("--env-var", name)]
    t0 = time.perf_counter()
    proc = voxray(ray_cluster, "submit", str(job), "--address", ray_cluster.dashboard_url, "--follow", *env_args,
                  env=env, timeout=480)
    elapsed = time.perf_counter() - t0
    try:
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "SUCCEEDED" in proc.stdout and "cases_ok" in proc.stdout  # followed logs include the run summary
        info = status_json(ray_cluster, job_id_of(proc.stdout))
        assert info["state"] == "SUCCEEDED" and info["artefacts"]["preprocess.store"] == f"{bucket}/work/brats.zarr"
        # the job ran the shipped wheel (content-hashed version), installed on the cluster's nodes
        installed = list(ray_cluster.root.glob("*/session_*/runtime_resources/py_modules_files/voxray-*/"
                                               "voxray-*.dist-info"))
        assert installed and all("+" in p.name for p in installed)
        node_b = ray_cluster.node_id_with("node_b")
        tasks = convert_tasks(ray_cluster, info["ray_job_id"])
        nodes = {t["node_id"] for t in tasks if t["state"] == "FINISHED"}
        assert node_b in nodes and len(nodes) == 2, tasks
        ranks = [a for a in ray_cluster.actors(info["ray_job_id"]) if "TrainWorker" in a.get("class_name", "")]
        assert {a["node_id"] for a in ranks} >= {node_b}, ranks
        store = Store.open(f"{bucket}/work/brats.zarr")
        assert len(store.case_ids()) == 4 and set(store.manifest().column("status").to_pylist()) == {"ok"}
        assert list_versions(f"{bucket}/registry/mn-s3") == [1]
        fs.invalidate_cache()
        assert fs.glob(f"{bucket.split('://')[1]}/runs/mn-s3/ray/mn-s3/checkpoint_*/state.pt")
        # each node worked in its own folders: both hold a working copy of the run, no node holds a store
        for node in ray_cluster.nodes:
            assert list((node.temp_dir / "cache" / "runs").iterdir()), node.name
        assert not list(ray_cluster.root.rglob("*.zarr"))
        with Client(f"http://127.0.0.1:{port}", env[SERVE_KEY_ENV]) as client:
            assert client.model()["name"] == "mn-s3"
            mask = client.predict(dataset / "imagesTr" / "BRATS_005.nii.gz")
        assert mask.shape == (40, 40, 24)
    finally:
        _stop_serve(ray_cluster)
    print(f"share-nothing pipeline submit → SUCCEEDED in {elapsed:.1f} s on {len(nodes)} nodes")


def sweep_job(tmp: Path, name: str, bucket: str) -> Path:
    """A 2-trial sweep whose trials each need 0.91 CPU (driver 0.01 + one 0.9-CPU Train worker): with one CPU per
    node they can only run at the same time by running on both nodes. Dataset, store, checkpoints, Tune state and
    registry are all on S3."""
    job = tmp / f"{name}.yaml"
    job.write_text(s3_pipeline_head(name, bucket) + f"""train:
  task: labels
  model: {{name: unet_depth, depth: 2, base_channels: 4}}
  patch: [16, 16]
  batch_size: 2
  steps: 40
  schedule: {{name: constant}}
  sampling: {{loader_workers: 0, slice_mode: most_populated}}
  augment: {{enabled: false}}
  validation: {{every: 20, folds: 2, max_cases: 1}}
  checkpoint: {{every: 20, keep: 1}}
  scaling: {{num_workers: 1, cpus_per_worker: 0.9}}
  tracking: {{mlflow: false}}
  output: {bucket}/runs
  registry: {bucket}/registry
tune:
  space: {{train.optimizer.lr: {{grid: [1.0e-3, 1.0e-2]}}}}
  num_samples: 1
  max_concurrent: 2
  search: grid
  metric: val/dice_mean
  mode: max
  scheduler: {{name: fifo}}
  output: {bucket}/tune
""")
    return job


def _trial_spans(fs, sweep: str) -> list[tuple[float, float]]:
    """(start, end) wall time of each trial from Tune's own result.json lines on S3."""
    spans = []
    for path in fs.glob(f"{sweep.split('://')[1]}/experiment/*/result.json"):
        rows = [json.loads(line) for line in fs.cat(path).decode().splitlines() if line.strip()]
        first, last = rows[0], rows[-1]
        spans.append((first["timestamp"] - first["time_this_iter_s"], last["timestamp"]))
    return spans


def test_sweep_trials_run_concurrently_on_both_nodes(ray_cluster, s3_server, dataset, tmp_path):
    """A submitted sweep on the share-nothing layout: its two trials' Train workers run on different nodes at the
    same time, each trial checkpoints to S3, and the results table and best model land on S3."""
    import fsspec
    import pyarrow.parquet as pq

    from voxray.training.registry import list_versions, read_card

    assert len(ray_cluster.alive_nodes()) == 2, "both nodes must be up (the node-death test runs last)"
    bucket = f"s3://{s3_server.create_bucket()}"
    fs, path = fsspec.core.url_to_fs(f"{bucket}/data/msd")
    fs.put(str(dataset) + "/", path, recursive=True)
    job = sweep_job(tmp_path, "mn-sweep", bucket)
    env = {**ray_cluster.env, **{k: os.environ[k] for k in S3_ENV}}
    env_args = [a for name in S3_ENV for a in ("--env-var", name)]
    proc = voxray(ray_cluster, "submit", str(job), "--address", ray_cluster.dashboard_url, "--follow", *env_args,
                  env=env, timeout=480)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    info = status_json(ray_cluster, job_id_of(proc.stdout))
    assert info["state"] == "SUCCEEDED", "\n".join(info["logs_tail"])
    workers = [a for a in ray_cluster.actors(info["ray_job_id"]) if "TrainWorker" in a.get("class_name", "")]
    sweep = f"{bucket}/tune/mn-sweep"
    fs.invalidate_cache()
    (a0, a1), (b0, b1) = sorted(_trial_spans(fs, sweep))
    where = [(a["node_id"][:8], a.get("pid")) for a in workers]
    assert b0 < a1, f"trials did not overlap in time: {a0:.1f}–{a1:.1f} and {b0:.1f}–{b1:.1f}; workers {where}"
    assert len(workers) == 2 and len({a["node_id"] for a in workers}) == 2, where  # one trial per node
    bare = sweep.split("://")[1]
    checkpoints = fs.glob(f"{bare}/trials/*/ray/*/checkpoint_*/state.pt")
    assert len({p.split("/trials/")[1].split("/")[0] for p in checkpoints}) == 2  # each trial checkpointed to S3
    with fs.open(f"{bare}/tune_results.parquet", "rb") as f:
        table = pq.read_table(f)
    assert table.num_rows == 2 and set(table.column("status").to_pylist()) == {"TERMINATED"}
    assert list_versions(f"{bucket}/registry/mn-sweep") == [1]
    assert read_card(f"{bucket}/registry/mn-sweep")["source"]["tune_dir"] == sweep
    assert not list(ray_cluster.root.rglob("*.zarr"))  # no node wrote a store to its disk


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


def test_worker_node_dies_mid_preprocessing(ray_cluster, s3_server, big_dataset, tmp_path):
    """Last in this file: node_b stays dead for the rest of the session.

    On the share-nothing layout (dataset and store on S3), SIGKILL node_b's raylet while it converts a case:
    Ray retries the task on the head, which downloads that case itself; all cases land."""
    import fsspec

    node_b = next(n for n in ray_cluster.nodes if n.name == "node_b")
    node_b_id = ray_cluster.node_id_with("node_b")
    bucket = f"s3://{s3_server.create_bucket()}"
    fs, path = fsspec.core.url_to_fs(f"{bucket}/data/msd_big")
    fs.put(str(big_dataset) + "/", path, recursive=True)
    store = f"{bucket}/brats.zarr"
    job = write_job(tmp_path, "mn-kill", f"{bucket}/data/msd_big", store, cases=8)
    env = {**ray_cluster.env, **{k: os.environ[k] for k in S3_ENV}}
    env_args = [a for name in S3_ENV for a in ("--env-var", name)]
    proc = voxray(ray_cluster, "submit", str(job), "--address", ray_cluster.dashboard_url, *env_args, env=env)
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


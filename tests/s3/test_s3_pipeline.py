"""Every stage on a real S3 server (SeaweedFS, auth on): preprocess writes the zarr store, manifest and fingerprint
to s3://; 2-rank DDP training reads it and checkpoints through Ray Train's storage to s3://; a worker killed
mid-run resumes from the checkpoint read back from S3; the best model goes to an s3:// registry; Serve loads it
from there and answers a prediction. The secrets appear in no artefact."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from voxray.platform.specs.loader import validate_job

pytestmark = pytest.mark.slow

KEY_ENV = "VOXRAY_TEST_S3_SERVE_KEY"
KEY = "s3-serve-key-0123456789"
NAME = "s3-pipe"
STEPS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from voxray.preprocessing.synth import synth_dataset

    return synth_dataset("msd_brats", tmp_path_factory.mktemp("msd"), cases=5, seed=1, shape=(32, 32, 24))


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    return f"s3://{s3_server.create_bucket()}"


def pipeline(dataset: Path, bucket: str, base: Path, *, serve: bool = True, **train):
    spec = {"kind": "pipeline", "name": NAME, "preprocess": {
        "dataset": {"layout": "msd_brats", "root": str(dataset)}, "store": f"{bucket}/work/brats.zarr",
        "chunk": [16, 16, 16], "max_cases": 4, "memory_per_case_mb": 256},
        "train": {"task": "brats_regions", "model": {"name": "unet", "channels": [8, 16], "num_res_units": 1},
                  "patch": [16, 16, 16], "batch_size": 1, "steps": STEPS, "optimizer": {"lr": 3e-3},
                  "schedule": {"name": "constant"}, "validation": {"every": STEPS, "folds": 2, "max_cases": 1},
                  "checkpoint": {"every": 4}, "scaling": {"num_workers": 2, "cpus_per_worker": 0.5},
                  "sampling": {"loader_workers": 1}, "augment": {"enabled": False}, "tracking": {"mlflow": False},
                  "output": f"{bucket}/runs", "registry": f"{bucket}/registry", **train}}
    if serve:
        spec["serve"] = {"model": "__pipeline__", "port": _free_port(), "api_key_env": KEY_ENV, "num_cpus": 0.5,
                         "blocking": False}
    return validate_job(spec, base_dir=base)


def _kill_rank1_when(run_dir: Path, step: int, killed: dict) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if json.loads((run_dir / "progress.json").read_text())["step"] >= step:
                pid = int((run_dir / "workers" / "rank1.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)


def _objects(bucket: str) -> dict[str, bytes]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(bucket)
    fs.invalidate_cache()
    return {p: fs.cat_file(p) for p in fs.find(root)}


def test_every_stage_on_s3(ray_session, s3_server, dataset, bucket, tmp_path, monkeypatch, caplog):
    from ray import serve

    from voxray.platform.stages import run_job
    from voxray.preprocessing.store import Store
    from voxray.serving.client import Client
    from voxray.training.registry import list_versions, read_card
    from voxray.training.rundir import RunDir

    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working dir: every artefact goes to S3
    job = pipeline(dataset, bucket, tmp_path)
    run_local = RunDir.of(job.train.output, NAME).local
    killed: dict = {}
    watcher = threading.Thread(target=_kill_rank1_when, args=(run_local, 6, killed), daemon=True)
    watcher.start()
    try:
        res = run_job(job)
        assert res.ok, res.message
        watcher.join(timeout=1)
        assert killed, "rank 1 was never killed"
        # the store is on S3: zarr arrays, manifest, fingerprint, resolved spec
        store_uri = f"{bucket}/work/brats.zarr"
        store = Store.open(store_uri)
        assert store.case_ids() == ["BRATS_001", "BRATS_002", "BRATS_003", "BRATS_004"]
        assert store.image("BRATS_001").shape[0] == 4 and float(np.std(store.image("BRATS_002")[:])) > 0
        assert store.fingerprint()["cases"] == 4
        objects = _objects(bucket)
        keys = sorted(objects)
        for name in ("manifest.parquet", "fingerprint.json", "job.resolved.yaml", "zarr.json"):
            assert any(k.endswith(f"work/brats.zarr/{name}") for k in keys), name
        # checkpoints went to S3 through Ray Train's storage, and only there; the resume read them back
        ckpts = [k for k in keys if f"runs/{NAME}/ray/{NAME}/checkpoint_" in k and k.endswith("state.pt")]
        assert ckpts, keys
        local = [p for p in run_local.rglob("checkpoint_*/state.pt") if "best" not in p.parts]
        assert not local  # no local checkpoint a restart could have used (`best/` is the export's download)
        assert int((run_local / "workers" / "rank1.pid").read_text()) != killed["pid"]
        from voxray.training.checkpoint import load_state

        best_local = Path(run_local / "best")
        assert [load_state(p)["step"] for p in best_local.iterdir()] == [STEPS]
        summary = res.summary
        assert summary["train.checkpoint"].startswith(f"{bucket}/runs/{NAME}/ray/")
        result = json.loads(objects[next(k for k in keys if k.endswith(f"runs/{NAME}/result.json"))])
        assert result["data"]["hash"] == store.data_version()["hash"]
        steps = [int(r.split(",")[0]) for r in
                 objects[next(k for k in keys if k.endswith(f"runs/{NAME}/metrics.csv"))].decode().splitlines()[1:]]
        assert steps == sorted(steps) and steps[-1] == STEPS  # tracking pushed by rank 0
        # the model is in the S3 registry and Serve loaded it from there
        model_uri = summary["train.model"]
        assert model_uri == f"{bucket}/registry/{NAME}/1" and list_versions(f"{bucket}/registry/{NAME}") == [1]
        card = read_card(f"{bucket}/registry/{NAME}")
        assert card["source"]["checkpoint"].startswith(f"{bucket}/runs/") and card["channels"]
        with Client(summary["serve.url"], KEY) as client:
            assert client.model()["name"] == NAME
            mask = client.predict(dataset / "imagesTr" / "BRATS_005.nii.gz")
        assert mask.shape == (32, 32, 24) and np.asarray(mask.dataobj).dtype == np.uint8
    finally:
        serve.shutdown()
    # credentials never reach an artefact
    blob = b"".join(objects.values())
    assert s3_server.secret_key.encode() not in blob and s3_server.access_key.encode() not in blob
    assert not [p for p in tmp_path.iterdir()]
    # a rerun with the same data and spec converts nothing and does not retrain
    caplog.set_level(logging.INFO)
    t0 = time.monotonic()
    again = run_job(pipeline(dataset, bucket, tmp_path, serve=False))
    assert again.ok and again.summary["preprocess.cases_reused"] == 4 and again.summary["preprocess.cases_converted"] == 0
    assert "already finished (same spec, same store data" in caplog.text and time.monotonic() - t0 < 60
    assert list_versions(f"{bucket}/registry/{NAME}") == [1]

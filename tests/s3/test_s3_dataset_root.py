"""A dataset root on S3: discovery on the driver's skeleton, each conversion task downloads only its case, the
source checksums are the objects' ETags keyed by URI (a replaced object is converted again, an untouched one not),
and a missing dataset bucket fails before Ray."""

from __future__ import annotations

import json

import pytest

from voxray.platform.specs.loader import validate_job

pytestmark = pytest.mark.slow


def _job(root: str, store: str, base):
    return validate_job({"kind": "preprocess", "name": "remote-root", "ray": {"num_cpus": 2}, "preprocess": {
        "dataset": {"layout": "msd_brats", "root": root}, "store": store, "chunk": [16, 16, 16],
        "memory_per_case_mb": 256}}, base_dir=base)


def test_dataset_root_on_s3(ray_session, s3_bucket, tmp_path):
    import fsspec

    from voxray.platform.stages import run_job
    from voxray.preprocessing.store import Store
    from voxray.preprocessing.synth import synth_dataset

    local = synth_dataset("msd_brats", tmp_path / "msd", cases=3, seed=3, shape=(24, 24, 16))
    root = f"{s3_bucket}/data/msd"
    fs, path = fsspec.core.url_to_fs(root)
    fs.put(str(local) + "/", path, recursive=True)
    res = run_job(_job(root, f"{s3_bucket}/brats.zarr", tmp_path))
    assert res.ok and res.summary["cases_ok"] == 3, res.message
    store = Store.open(f"{s3_bucket}/brats.zarr")
    row = {r["case_id"]: r for r in store.manifest().to_pylist()}["BRATS_002"]
    sources = json.loads(row["sources"])
    assert set(sources) == {f"{root}/imagesTr/BRATS_002.nii.gz", f"{root}/labelsTr/BRATS_002.nii.gz"}
    assert all(v["etag"] and v["size"] > 0 for v in sources.values())
    from voxray.preprocessing.store.verify import verify_store

    assert verify_store(f"{s3_bucket}/brats.zarr", sources=True).ok  # sources checked by their ETags
    again = run_job(_job(root, f"{s3_bucket}/brats.zarr", tmp_path))
    assert again.summary["cases_converted"] == 0 and again.summary["cases_reused"] == 3
    # replace one object with other bytes (another case's image): only that case converts again
    fs.put_file(str(local / "imagesTr" / "BRATS_001.nii.gz"), f"{path}/imagesTr/BRATS_003.nii.gz")
    stale = verify_store(f"{s3_bucket}/brats.zarr", sources=True)
    assert not stale.ok and any("BRATS_003" in p and "changed since conversion" in p for p in stale.problems)
    third = run_job(_job(root, f"{s3_bucket}/brats.zarr", tmp_path))
    assert third.summary["cases_converted"] == 1 and third.summary["cases_reused"] == 2
    cases = {t["case"]: t["status"] for t in third.tables[0][1]}
    assert cases == {"BRATS_001": "ok (reused)", "BRATS_002": "ok (reused)", "BRATS_003": "ok"}


def test_missing_dataset_bucket_fails_before_ray(tmp_path, s3_server):
    from voxray.platform.stages import run_job
    from voxray.platform.storage import StorageError

    with pytest.raises(StorageError, match="preprocess.dataset.root: s3://vx-absent-data/msd: bucket"):
        run_job(_job("s3://vx-absent-data/msd", str(tmp_path / "s.zarr"), tmp_path))

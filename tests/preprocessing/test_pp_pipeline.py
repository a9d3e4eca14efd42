"""The Ray Data pipeline end to end: bad cases become error rows, good ones are stored, reruns reuse work."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from _pp_helpers import job, rewrite, synth, truncate
from voxray.preprocessing.runner import run_preprocess
from voxray.preprocessing.store import Store
from voxray.preprocessing.store.verify import verify_store


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """Seven cases: three good, one truncated, one with NaN, one label value outside the map, one label off-grid."""
    root = synth(tmp_path_factory.mktemp("msd") / "msd_brats", cases=7)
    truncate(root / "imagesTr" / "BRATS_004.nii.gz")

    def nan(d):
        d = d.astype(np.float32)
        d[5, 5, 5, 1] = np.nan
        return d

    def seven(d):
        d[3, 3, 3] = 7
        return d

    rewrite(root / "imagesTr" / "BRATS_005.nii.gz", nan)
    rewrite(root / "labelsTr" / "BRATS_006.nii.gz", seven)
    label = nib.load(str(root / "labelsTr" / "BRATS_007.nii.gz"))
    shifted = label.affine.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj), shifted), str(root / "labelsTr" / "BRATS_007.nii.gz"))
    return root


@pytest.mark.slow
def test_pipeline_errors_rows_and_resume(ray_session, broken, tmp_path):
    uri = "file://" + str(tmp_path / "store.zarr")
    res = run_preprocess(job(broken, uri, concurrency=2, memory_per_case_mb=256))
    assert not res.ok
    assert res.summary["cases_ok"] == 3 and res.summary["cases_failed"] == 4
    assert res.summary["store"] == uri and "3 ok / 4 failed" in res.message
    rows = {r["case_id"]: r for r in Store.open(uri).manifest().to_pylist()}
    assert "BRATS_004" in rows["BRATS_004"]["error"]
    assert "NaN" in rows["BRATS_005"]["error"]
    assert "label values [7]" in rows["BRATS_006"]["error"] or "BRATS_006" in rows["BRATS_006"]["error"]
    assert rows["BRATS_007"]["status"] == "error" and "BRATS_007" in rows["BRATS_007"]["error"]
    s = Store.open(uri)
    assert s.case_ids() == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert verify_store(uri).ok
    table = dict(res.tables)["cases"]
    assert [r["status"] for r in table] == ["ok"] * 3 + ["error"] * 4
    resolved = (tmp_path / "store.zarr" / "job.resolved.yaml").read_text()
    assert "msd_brats" in resolved

    # rerun: the good cases are reused, the failed ones retried (and fail again)
    res2 = run_preprocess(job(broken, uri, concurrency=2, memory_per_case_mb=256))
    assert res2.summary["cases_reused"] == 3 and res2.summary["cases_converted"] == 4
    assert Store.open(uri).case_ids() == s.case_ids()
    assert json.loads((tmp_path / "store.zarr" / "fingerprint.json").read_text())["cases"] == 3


def test_pipeline_all_reused_skips_ray_work(ray_session, tmp_path):
    root = synth(tmp_path / "msd_brats", cases=2)
    uri = str(tmp_path / "store.zarr")
    first = run_preprocess(job(root, uri))
    assert first.ok and first.summary["cases_converted"] == 2
    second = run_preprocess(job(root, uri))
    assert second.ok and second.summary["cases_reused"] == 2 and second.summary["cases_converted"] == 0
    assert Store.open(uri).case_ids() == ["BRATS_001", "BRATS_002"]

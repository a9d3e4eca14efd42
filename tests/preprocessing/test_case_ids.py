"""Case ids are single safe path segments, by one rule every adapter gets (Case itself applies it): an id from a
`case_id_regex` group like `site1/p01` becomes `site1_p01`, lands at `_rows/site1_p01.json`, is listed, and a
rerun reuses it instead of reconverting; ids that cannot be made safe, or collide once safe, are clear errors."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import Case, safe_case_id, unique_ids
from voxray.preprocessing.datasets.nifti_pairs import NiftiPairsAdapter

from _pp_helpers import convert_loop


@pytest.mark.parametrize("raw,safe", [("site1/p01", "site1_p01"), ("sub 01", "sub_01"), ("a:b/c?d", "a_b_c_d"),
                                      ("../escape", "escape"), ("__zarr_reserved", "zarr_reserved"),
                                      ("BRATS_001", "BRATS_001"), ("x.y-z", "x.y-z")])
def test_rule(raw, safe):
    assert safe_case_id(raw, "f.nii.gz") == safe == safe_case_id(safe, "f.nii.gz")


@pytest.mark.parametrize("raw,reason", [("..", "no ASCII letter"), ("//", "no ASCII letter"), ("ü", "no ASCII"),
                                        ("x" * 200, "at most 128")])
def test_unsafe_ids_name_the_file(raw, reason):
    with pytest.raises(DataError, match=reason) as err:
        safe_case_id(raw, "/data/site/img.nii.gz")
    assert "/data/site/img.nii.gz" in str(err.value)


def test_every_case_is_made_safe(tmp_path):
    case = Case("a/b", {"t1": tmp_path / "a" / "b" / "t1.nii.gz"}, None, {"k": 1})
    assert case.case_id == "a_b" and case.meta == {"k": 1, "source_case_id": "a/b"}
    with pytest.raises(DataError, match="t1.nii.gz"):
        Case("..", {"t1": tmp_path / "t1.nii.gz"}, None)


def test_collisions_refused(tmp_path):
    a = Case("a/b", {"t1": tmp_path / "one.nii.gz"}, None)
    b = Case("a_b", {"t1": tmp_path / "two.nii.gz"}, None)
    with pytest.raises(DataError, match="two cases have the id 'a_b'.*one.nii.gz.*two.nii.gz"):
        unique_ids([a, b])


def _write(path: Path, value: float, dtype=np.float32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((16, 16, 12), dtype)
    data[4:12, 4:12, 3:9] = value
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))


def _dataset(root: Path) -> Path:
    for site in ("site1", "site2"):
        _write(root / site / "p01" / "t1.nii.gz", 100.0)
        _write(root / site / "p01" / "seg.nii.gz", 1, np.uint8)
    return root


def test_regex_ids_with_slashes_convert_once_and_are_listed(tmp_path):
    from voxray.platform.specs.loader import validate_job
    from voxray.preprocessing.store.reader import Store

    root = _dataset(tmp_path / "data")
    dataset = {"layout": "nifti_pairs", "root": str(root), "images": {"t1": "*/*/t1.nii.gz"},
               "label": "*/*/seg.nii.gz", "case_id_regex": r"^(\w+/\w+)/"}
    job = validate_job({"kind": "preprocess", "name": "ids", "preprocess": {
        "dataset": dataset, "store": str(tmp_path / "s.zarr"), "spacing": [1.0, 1.0, 1.0], "chunk": [16, 16, 16],
        "fg_samples_per_class": 20}}, base_dir=tmp_path)
    cases = NiftiPairsAdapter(images=dataset["images"], label=dataset["label"],
                              case_id_regex=dataset["case_id_regex"]).discover(root)
    assert [c.case_id for c in cases] == ["site1_p01", "site2_p01"]
    rows, todo, _ = convert_loop(job)
    assert len(todo) == 2 and all(r["status"] == "ok" for r in rows)
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "_rows").iterdir()) == ["site1_p01.json", "site2_p01.json"]
    assert Store.open(str(tmp_path / "s.zarr")).case_ids() == ["site1_p01", "site2_p01"]
    _, todo, kept = convert_loop(job)
    assert todo == [] and len(kept) == 2  # was reconverted on every run before


def test_regex_ids_colliding_once_safe(tmp_path):
    root = _dataset(tmp_path / "data")
    _write(root / "site1_p01" / "x" / "t1.nii.gz", 100.0)
    adapter = NiftiPairsAdapter(images={"t1": "**/t1.nii.gz"}, case_id_regex=r"^(site1.p01)/")
    with pytest.raises(DataError, match="'site1_p01' matches both"):
        adapter.discover(root)

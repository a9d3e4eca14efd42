"""Store writer/reader, manifest commit, resume planning and verify (single process, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _pp_helpers import convert_loop, job, rewrite, synth
from voxray.platform.errors import DataError
from voxray.preprocessing.cases import check_labels
from voxray.preprocessing.store import Store
from voxray.preprocessing.store.fs import StoreFiles
from voxray.preprocessing.store.manifest import read_rows
from voxray.preprocessing.store.verify import verify_store
from voxray.preprocessing.store.writer import fg_coordinates
from voxray.preprocessing.transforms import invert_label


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("msd") / "msd_brats", cases=3)


def test_store_round_trip(data, tmp_path):
    uri = str(tmp_path / "s.zarr")
    rows, todo, kept = convert_loop(job(data, uri))
    assert [r["status"] for r in rows] == ["ok"] * 3 and len(todo) == 3 and not kept
    s = Store.open(uri)
    assert s.case_ids() == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert s.channels == ("flair", "t1w", "t1gd", "t2w") and s.labels[3] == "enhancing"
    assert s.label_encoding == "index" and s.regions["WT"] == [1, 2, 3] and s.layout == "msd_brats"
    img, lab = s.image("BRATS_001"), s.label("BRATS_001")
    assert img.dtype == np.float16 and img.shape[0] == 4 and lab.shape == img.shape[1:]
    assert img.chunks[0] == 4 and img.chunks[1:] == tuple(min(16, n) for n in img.shape[1:])
    attrs = s.case_attrs("BRATS_001")
    assert attrs["shape"] == list(img.shape[1:]) and attrs["spacing"] == [1.0, 1.0, 1.0]
    # the stored label maps back onto the source file exactly (1 mm synth → no resampling)
    from voxray.preprocessing.datasets import get_adapter
    adapter = get_adapter("msd_brats")
    case = adapter.discover(data)[0]
    np.testing.assert_array_equal(invert_label(lab[...], attrs["record"]), adapter.load(case).label)
    fg = s.fg_coords("BRATS_001")
    assert set(fg) <= {1, 2, 3} and all(len(c) <= 50 for c in fg.values())
    for cls, coords in fg.items():
        assert np.all(lab[...][tuple(coords.T)] == cls)
    fp = s.fingerprint()
    assert fp["cases"] == 3 and fp["intensity_foreground"]["flair"]["n"] > 0
    assert set(fp["intensity_foreground"]["t1w"]) >= {"mean", "std", "percentile_00_5", "percentile_99_5"}
    assert s.manifest().num_rows == 3
    assert verify_store(uri, sources=True).ok


def test_memory_uri_store(data):
    uri = "memory://voxray-test/s.zarr"
    convert_loop(job(data, uri, max_cases=1))
    s = Store.open(uri)
    assert s.case_ids() == ["BRATS_001"]
    assert s.image("BRATS_001").shape[0] == 4
    assert verify_store(uri).ok


def test_uncommitted_case_is_invisible_and_resume_redoes_only_changes(data, tmp_path):
    uri = str(tmp_path / "s.zarr")
    j = job(data, uri)
    convert_loop(j)
    files = StoreFiles(uri)
    # a run killed after writing BRATS_002's arrays but before its row: un-commit it by hand
    files.remove("_rows/BRATS_002.json")
    rows, todo, kept = convert_loop(j)
    assert [c.case_id for c, _ in todo] == ["BRATS_002"] and len(kept) == 2
    # a changed source file is redone; a changed spec redoes everything
    def bump(d):
        d[12, 12, 8, 0] += 1
        return d

    rewrite(data / "imagesTr" / "BRATS_003.nii.gz", bump)
    _, todo, _ = convert_loop(j)
    assert [c.case_id for c, _ in todo] == ["BRATS_003"]
    _, todo, kept = convert_loop(job(data, uri, normalize="zscore"))
    assert len(todo) == 3 and not kept
    _, todo, _ = convert_loop(job(data, uri, normalize="zscore", overwrite=True))
    assert len(todo) == 3


def test_rows_without_manifest_are_not_exposed(data, tmp_path):
    uri = str(tmp_path / "s.zarr")
    convert_loop(job(data, uri, max_cases=1))
    StoreFiles(uri).remove("manifest.parquet")
    s = Store.open(uri)
    assert s.case_ids() == [] and "BRATS_001" in read_rows(StoreFiles(uri))
    with pytest.raises(DataError, match="no ok case"):
        s.image("BRATS_001")
    report = verify_store(uri)
    assert not report.ok and report.uncommitted == ["BRATS_001"]


def test_verify_detects_corruption(data, tmp_path):
    uri = tmp_path / "s.zarr"
    convert_loop(job(data, str(uri), max_cases=2))
    chunk = sorted((uri / "cases" / "BRATS_002" / "image" / "c").rglob("*"))[-1]
    chunk.write_bytes(b"garbage")
    report = verify_store(str(uri))
    assert not report.ok and report.checked == 2
    assert any(p.startswith("BRATS_002") for p in report.problems)


def test_open_errors(tmp_path):
    with pytest.raises(DataError, match="no zarr store"):
        Store.open(str(tmp_path / "missing.zarr"))
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(DataError, match="not a voxray store"):
        Store.open(str(tmp_path / "plain.zarr"))


def test_fg_coordinates_index_and_bitmask():
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1, 2, 3] = 1
    lab[2, 2, 2] = 2
    lab[3, 1, 1] = 3  # bitmask: classes 1 and 2 overlap here
    idx = fg_coordinates(lab, "index", 10, 0)
    assert sorted(map(tuple, idx.tolist())) == [(1, 1, 2, 3), (2, 2, 2, 2), (3, 3, 1, 1)]
    bits = fg_coordinates(lab, "bitmask", 10, 0)
    assert sorted(map(tuple, bits.tolist())) == [(1, 1, 2, 3), (1, 3, 1, 1), (2, 2, 2, 2), (2, 3, 1, 1)]
    many = np.ones((10, 10, 10), np.uint8)
    a, b = fg_coordinates(many, "index", 7, 3), fg_coordinates(many, "index", 7, 3)
    assert a.shape == (7, 4) and np.array_equal(a, b)  # subsampled, seeded
    with pytest.raises(ValueError, match="label_encoding"):
        fg_coordinates(lab, "onehot", 1, 0)


def test_check_labels():
    check_labels(np.array([0, 1, 3], np.uint8), {0: "bg", 1: "a", 3: "c"}, "index")
    with pytest.raises(ValueError, match=r"label values \[7\]"):
        check_labels(np.array([0, 7], np.uint8), {0: "bg", 1: "a"}, "index")
    check_labels(np.array([0, 3], np.uint8), {0: "bg", 1: "a", 2: "b"}, "bitmask")
    with pytest.raises(ValueError, match=r"\[4\]"):
        check_labels(np.array([0, 4], np.uint8), {0: "bg", 1: "a", 2: "b"}, "bitmask")


def test_manifest_row_sources_are_json(data, tmp_path):
    uri = str(tmp_path / "s.zarr")
    convert_loop(job(data, uri, max_cases=1))
    row = Store.open(uri).manifest().to_pylist()[0]
    src = json.loads(row["sources"])
    assert len(src) == 2 and all(len(v["sha256"]) == 64 for v in src.values())


def test_discovery_problem_becomes_error_row(data, tmp_path):
    from dataclasses import replace

    from voxray.preprocessing.cases import convert_case
    from voxray.preprocessing.datasets import get_adapter
    from voxray.preprocessing.runner import settings_from_spec

    adapter = get_adapter("msd_brats")
    case = replace(adapter.discover(data)[0], problems=("missing modality t2w",))
    settings = settings_from_spec(job(data, str(tmp_path / "s.zarr")).preprocess, adapter.metadata())
    row = convert_case(adapter, case, settings, {})
    assert row["status"] == "error" and "missing modality t2w" in row["error"]
    assert json.loads((tmp_path / "s.zarr" / "_rows" / f"{case.case_id}.json").read_text())["status"] == "error"


def test_run_preprocess_refuses_memory_store(data):
    from voxray.preprocessing.runner import run_preprocess

    with pytest.raises(DataError, match="memory://"):
        run_preprocess(job(data, "memory://x/s.zarr"))

"""Content-addressed resume: a rerun converts a case again when its source bytes changed, not when a timestamp
did; `checksum: size_mtime` is the opt-in fast path (and its known blind spot is pinned here too)."""

from __future__ import annotations

import json
import logging
import os

import pytest

from _pp_helpers import convert_loop, job, synth
from voxray.preprocessing.store.fs import StoreFiles
from voxray.preprocessing.store.manifest import read_rows


@pytest.fixture
def data(tmp_path):
    return synth(tmp_path / "msd_brats", cases=2)


def _same_size_edit(path) -> None:
    """Flip one byte in the middle, keep the size and the mtime (what an in-place tool or a restore can do)."""
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_touched_identical_file_is_not_reconverted(data, tmp_path, caplog):
    uri = str(tmp_path / "s.zarr")
    j = job(data, uri)
    convert_loop(j)
    image = data / "imagesTr" / "BRATS_001.nii.gz"
    st = image.stat()
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: new mtime, same bytes
    with caplog.at_level(logging.INFO, logger="voxray.preprocessing.cases"):
        _, todo, kept = convert_loop(j)
    assert todo == [] and len(kept) == 2
    assert "2 case(s) unchanged (same source content and settings): reused" in caplog.text
    row = read_rows(StoreFiles(uri))["BRATS_001"]
    assert json.loads(row["sources"])[str(image)]["mtime_ns"] == image.stat().st_mtime_ns  # new mtime recorded


def test_same_size_edit_is_reconverted_and_the_log_says_why(data, tmp_path, caplog):
    uri = str(tmp_path / "s.zarr")
    j = job(data, uri)
    convert_loop(j)
    _same_size_edit(data / "labelsTr" / "BRATS_002.nii.gz")
    with caplog.at_level(logging.INFO, logger="voxray.preprocessing.cases"):
        rows, todo, kept = convert_loop(j)
    assert [c.case_id for c, _ in todo] == ["BRATS_002"] and [r["case_id"] for r in kept] == ["BRATS_001"]
    assert "case BRATS_002: converting (source content changed (BRATS_002.nii.gz))" in caplog.text
    assert {r["case_id"]: r["status"] for r in rows}["BRATS_002"] == "error"  # the flipped byte breaks the gzip


def test_size_mtime_fast_path_skips_hashing_and_misses_such_edits(data, tmp_path):
    uri = str(tmp_path / "s.zarr")
    fast = job(data, uri, checksum="size_mtime")
    convert_loop(fast)
    _same_size_edit(data / "imagesTr" / "BRATS_001.nii.gz")
    _, todo, _ = convert_loop(fast)
    assert todo == []  # the documented blind spot of the opt-in fast path
    _, todo, _ = convert_loop(job(data, uri))  # the default reads the bytes and notices
    assert [c.case_id for c, _ in todo] == ["BRATS_001"]


def test_new_and_changed_settings_reasons(data, tmp_path, caplog):
    uri = str(tmp_path / "s.zarr")
    convert_loop(job(data, uri, max_cases=1))
    with caplog.at_level(logging.INFO, logger="voxray.preprocessing.cases"):
        _, todo, _ = convert_loop(job(data, uri))
    assert [c.case_id for c, _ in todo] == ["BRATS_002"] and "1 case(s) to convert: new case (BRATS_002)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="voxray.preprocessing.cases"):
        _, todo, _ = convert_loop(job(data, uri, chunk=[8, 8, 8]))
    assert len(todo) == 2 and "conversion settings changed" in caplog.text

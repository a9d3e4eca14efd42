"""The store knows which cases are labelled: the manifest's `has_label`, or, for stores written without that
column, whether `cases/<id>/label` exists."""

from __future__ import annotations

import io

import pyarrow.parquet as pq

from _pp_helpers import SHAPE, convert_loop, job
from voxray.preprocessing.store import Store
from voxray.preprocessing.store.fs import StoreFiles
from voxray.preprocessing.store.manifest import MANIFEST


def test_labelled_and_unlabelled_cases(tmp_path):
    from voxray.preprocessing.synth import synth_dataset

    data = synth_dataset("msd_brats", tmp_path / "msd", cases=2, test_cases=1, seed=0, shape=SHAPE)
    uri = str(tmp_path / "s.zarr")
    convert_loop(job(data, uri, dataset={"layout": "msd_brats", "root": str(data), "split": "all"}))
    s = Store.open(uri)
    assert s.case_ids() == ["BRATS_001", "BRATS_002", "BRATS_003"]
    assert s.labelled_case_ids() == ["BRATS_001", "BRATS_002"] and s.unlabelled_case_ids() == ["BRATS_003"]
    assert s.has_label("BRATS_001") and not s.has_label("BRATS_003") and s.label("BRATS_003") is None
    # an older store: manifest without the has_label column → judged by the label arrays it holds
    files = StoreFiles(uri)
    table = pq.read_table(io.BytesIO(files.read_bytes(MANIFEST))).drop_columns(["has_label"])
    buf = io.BytesIO()
    pq.write_table(table, buf)
    files.write_bytes(MANIFEST, buf.getvalue())
    old = Store.open(uri)
    assert "has_label" not in old.manifest().column_names
    assert old.labelled_case_ids() == ["BRATS_001", "BRATS_002"] and old.unlabelled_case_ids() == ["BRATS_003"]

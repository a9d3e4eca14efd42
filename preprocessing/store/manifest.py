"""Per-case rows: durable `_rows/<id>.json` written as each case finishes, compiled into `manifest.parquet`.

A row is the commit of a case: readers only expose cases whose manifest row says `ok`, so a case whose arrays
were half-written when a run died is invisible, and a rerun redoes it.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from voxray.preprocessing.store.fs import StoreFiles

MANIFEST = "manifest.parquet"
ROWS = "_rows"

SCHEMA = pa.schema([
    ("case_id", pa.string()),
    ("status", pa.string()),              # ok | error
    ("error", pa.string()),
    ("sources", pa.string()),             # JSON {path: {sha256, size, mtime_ns}}
    ("spec_hash", pa.string()),
    ("original_shape", pa.list_(pa.int32())),
    ("shape", pa.list_(pa.int32())),      # stored (Z, Y, X)
    ("spacing", pa.list_(pa.float64())),  # stored (z, y, x) mm
    ("channels", pa.int32()),
    ("has_label", pa.bool_()),
    ("image_sha256", pa.string()),
    ("label_sha256", pa.string()),
    ("seconds", pa.float64()),
    ("finished", pa.string()),            # ISO time
])

EXTRA_KEYS = ("intensity", "original_spacing", "source_dtypes")
"""Row keys kept in `_rows/*.json` only (fingerprint inputs), not in the parquet manifest."""


def row_key(case_id: str) -> str:
    return f"{ROWS}/{case_id}.json"


def write_row(files: StoreFiles, row: dict) -> None:
    """Durably commit one case's row (atomic per file)."""
    files.write_json(row_key(row["case_id"]), row)


def read_rows(files: StoreFiles) -> dict[str, dict]:
    """Every committed row by case id (skips unreadable rows: they only make that case be redone)."""
    rows = {}
    for key in files.list(ROWS):
        if not key.endswith(".json"):
            continue
        try:
            row = files.read_json(key)
        except (ValueError, OSError):
            continue
        rows[row["case_id"]] = row
    return rows


def drop_rows(files: StoreFiles, case_ids: Iterable[str]) -> None:
    for cid in case_ids:
        files.remove(row_key(cid))


def to_table(rows: Iterable[dict]) -> pa.Table:
    cols: dict[str, list] = {f.name: [] for f in SCHEMA}
    for row in sorted(rows, key=lambda r: r["case_id"]):
        for name in cols:
            value = row.get(name)
            if name == "sources" and not isinstance(value, (str, type(None))):
                value = json.dumps(value, sort_keys=True)
            cols[name].append(value)
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def write_manifest(files: StoreFiles, rows: Iterable[dict]) -> pa.Table:
    table = to_table(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    files.write_bytes(MANIFEST, buf.getvalue())
    return table


def read_manifest(files: StoreFiles) -> pa.Table:
    """The committed manifest, or an empty table when no run has finished yet."""
    if not files.exists(MANIFEST):
        return SCHEMA.empty_table()
    return pq.read_table(io.BytesIO(files.read_bytes(MANIFEST)))


def table_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()

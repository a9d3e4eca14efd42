"""`voxray inspect`: what a dataset holds, case by case, decoded through its adapter so broken cases show up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import Case, DatasetAdapter

log = logging.getLogger(__name__)


def case_modalities(adapter: DatasetAdapter, case: Case) -> list[str]:
    """The channel names a case holds: its per-modality files' keys, or, when one multi-channel file (a 4D NIfTI,
    an RGB TIF stack) holds them all under a single key, the adapter's channel names instead of that key."""
    keys = list(case.images)
    if len(keys) == 1 and len(adapter.channels) > 1:
        return list(adapter.channels)
    return keys


def case_summary(adapter: DatasetAdapter, case: Case) -> dict:
    """One row: modalities, shape, spacing, label values, and the problems (discovery or decoding) of one case."""
    row = {"case_id": case.case_id, "modalities": case_modalities(adapter, case), "files": len(case.files()),
           "shape": None, "spacing": None, "label_values": None, "problems": list(case.problems)}
    if case.problems:
        row["status"] = "error"
        return row
    try:
        vol = adapter.load(case)
    except DataError as exc:  # CaseError and friends: recorded, the listing goes on
        row.update(status="error", problems=[str(exc)])
        return row
    row.update(status="ok", shape=list(vol.image.shape[1:]), spacing=[round(s, 4) for s in vol.spacing],
               channels=list(vol.channels), modalities=list(vol.channels))
    if vol.label is not None:
        row["label_values"] = np.unique(vol.label).astype(int).tolist()
    if vol.meta.get("resampled"):
        row["resampled"] = f"{', '.join(vol.meta['resampled'])} → {vol.meta['reference_grid']} grid"
    return row


def inspect_dataset(adapter: DatasetAdapter, root: str | Path, limit: int | None = None) -> dict:
    """Discover and decode (the first `limit`) cases; dataset-level facts plus one row per case."""
    cases = adapter.discover(root)
    shown = cases[:limit] if limit else cases
    rows = [case_summary(adapter, c) for c in shown]
    values = sorted({v for r in rows for v in (r["label_values"] or [])})
    labelled = sum(c.label is not None for c in cases)
    return {
        "root": str(root), **adapter.metadata(), "split": adapter.split,
        "cases": len(cases), "labelled": labelled, "unlabelled": len(cases) - labelled,
        "inspected": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
        "with_problems": sum(r["status"] == "error" for r in rows), "label_values_seen": values, "rows": rows,
    }

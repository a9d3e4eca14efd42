"""`voxray store verify`: every ok case is readable, matches its checksums and shape, and has a valid fg index."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxray.preprocessing.store.manifest import read_rows
from voxray.preprocessing.store.reader import Store
from voxray.preprocessing.store.writer import array_sha256

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    uri: str
    checked: int = 0
    errors: int = 0
    """Cases the manifest records as failed conversions (reported, not integrity problems)."""
    uncommitted: list[str] = field(default_factory=list)
    """Cases with arrays or rows but no manifest entry (an interrupted run; a rerun finishes them)."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_case(store: Store, row: dict, sources: bool) -> list[str]:
    cid = row["case_id"]
    out = []
    image = np.asarray(store.image(cid)[...])
    if list(image.shape[1:]) != list(row["shape"]) or image.shape[0] != row["channels"]:
        out.append(f"{cid}: image shape {image.shape} does not match the manifest {row['channels']}×{row['shape']}")
    if array_sha256(image) != row["image_sha256"]:
        out.append(f"{cid}: image checksum mismatch (stored data changed or is corrupt)")
    label = store.label(cid)
    if row["has_label"]:
        if label is None:
            out.append(f"{cid}: label missing")
        elif array_sha256(np.asarray(label[...])) != row["label_sha256"]:
            out.append(f"{cid}: label checksum mismatch")
    fg = store.fg_coords(cid)
    for cls, coords in fg.items():
        if len(coords) and (coords.min() < 0 or np.any(coords.max(axis=0) >= np.asarray(row["shape"]))):
            out.append(f"{cid}: fg coordinates of class {cls} fall outside the image")
    if "record" not in store.case_attrs(cid):
        out.append(f"{cid}: attrs lack the inverse-transform record")
    if sources:
        out.extend(_check_sources(cid, json.loads(row["sources"] or "{}")))
    return out


def _check_sources(cid: str, info: dict) -> list[str]:
    from voxray.preprocessing.cases import file_sha256

    out = []
    for path, meta in info.items():
        if "://" in path:  # a dataset root on an object store: compare the object's ETag (remote.py)
            out.extend(_check_remote_source(cid, path, meta))
            continue
        if not Path(path).is_file():
            out.append(f"{cid}: source {path} is gone")
        elif file_sha256(Path(path)) != meta.get("sha256"):
            out.append(f"{cid}: source {path} changed since conversion (rerun the preprocess job)")
    return out


def _check_remote_source(cid: str, uri: str, meta: dict) -> list[str]:
    from voxray.platform.storage import fs_for

    fs, path = fs_for(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return [f"{cid}: source {uri} is gone"]
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"') or None
    if etag != meta.get("etag"):
        return [f"{cid}: source {uri} changed since conversion (rerun the preprocess job)"]
    return []


def verify_store(uri: str, *, sources: bool = False) -> VerifyReport:
    """Check every ok case end to end; `sources=True` also re-hashes the source files still on disk."""
    store = Store.open(uri)
    report = VerifyReport(uri=uri)
    manifest = store.manifest().to_pylist()
    if not manifest:
        report.problems.append("no manifest rows: the conversion never finished (rerun the preprocess job)")
    for row in manifest:
        if row["status"] != "ok":
            report.errors += 1
            continue
        report.checked += 1
        try:
            report.problems.extend(_check_case(store, row, sources))
        except Exception as exc:  # unreadable chunk, missing array: an integrity problem, not a crash
            report.problems.append(f"{row['case_id']}: unreadable ({type(exc).__name__}: {exc})")
    listed = {r["case_id"] for r in manifest}
    report.uncommitted = sorted(set(read_rows(store._files)) - listed)
    try:
        store.fingerprint()
    except Exception as exc:
        report.problems.append(str(exc))
    return report

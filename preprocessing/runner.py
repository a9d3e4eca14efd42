"""`run_preprocess(job)`: dataset → zarr v3 store on Ray Data, resumable, with a per-case summary."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from voxray.platform.errors import DataError
from voxray.platform.specs.loader import RESOLVED_NAME, dump_job
from voxray.platform.stages import StageResult
from voxray.preprocessing.cases import ConvertSettings, plan, spec_hash
from voxray.preprocessing.convert import convert_dataset
from voxray.preprocessing.datasets.base import unique_ids
from voxray.preprocessing.remote import RemoteRoot, is_remote_root
from voxray.preprocessing.store.fs import StoreFiles
from voxray.preprocessing.store.manifest import read_rows, write_row
from voxray.preprocessing.store.writer import WriteOptions
from voxray.preprocessing.transforms import TransformConfig

log = logging.getLogger(__name__)


def settings_from_spec(spec: Any, meta: dict) -> ConvertSettings:
    """Transform + write settings and the spec hash from a `PreprocessSpec` and the adapter's metadata."""
    transform = TransformConfig.from_spec(spec)
    write = WriteOptions(image_dtype=spec.image_dtype, chunk=tuple(spec.chunk), codec=spec.codec.name,
                         level=spec.codec.level, fg_samples_per_class=spec.fg_samples_per_class,
                         label_encoding=meta.get("label_encoding", "index"))
    options = spec.dataset.model_dump(exclude={"root"}, mode="json")
    return ConvertSettings(uri=spec.store, transform=transform, write=write, labels=dict(meta.get("labels") or {}),
                           spec_hash=spec_hash(transform, write, meta, options))


def root_attrs(settings: ConvertSettings, meta: dict) -> dict:
    labels = {str(k): v for k, v in (meta.get("labels") or {}).items()}
    w = settings.write
    return {**meta, "labels": labels, "spec_hash": settings.spec_hash, "transform": settings.transform.to_dict(),
            "image_dtype": w.image_dtype, "chunk": list(w.chunk), "codec": {"name": w.codec, "level": w.level}}


def _table(rows: list[dict], reused: set[str]) -> list[dict]:
    return [{"case": r["case_id"], "status": r["status"] if r["case_id"] not in reused else "ok (reused)",
             "shape": "×".join(map(str, r.get("shape") or [])) or None, "seconds": r.get("seconds"),
             "error": r.get("error")} for r in rows]


def discover(spec: Any, adapter: Any, root: Any = None) -> list:
    """The cases to convert: discovered (under `root`, default the spec's), sorted by id, cut to `max_cases`;
    DataError when there are none."""
    cases = sorted(unique_ids(adapter.discover(root or spec.dataset.root)), key=lambda c: c.case_id)
    if spec.max_cases:
        cases = cases[: spec.max_cases]
    if not cases:
        raise DataError(f"{spec.dataset.root}: no cases found for layout {spec.dataset.layout!r}")
    return cases


def plan_store(spec: Any, cases: list, settings: ConvertSettings, files: StoreFiles, remote: Any = None
               ) -> tuple[list, list[dict]]:
    """(cases to convert with their source info, kept rows) against the store's committed rows; a kept case whose
    files were touched but not changed gets its new size/mtime recorded (so `checksum: size_mtime` skips it later)."""
    committed = read_rows(files)
    todo, kept = plan(cases, committed, settings.spec_hash, spec.overwrite, fast=spec.checksum == "size_mtime",
                      remote=remote)
    for row in kept:
        if row["sources"] != committed[row["case_id"]]["sources"]:
            write_row(files, row)
    return todo, kept


def run_preprocess(job: Any) -> StageResult:
    """Convert the job's dataset into its store; not ok when any case failed (good cases are kept)."""
    from voxray.preprocessing.datasets import adapter_from_spec

    spec = job.preprocess
    if spec.store.startswith("memory://"):
        raise DataError(f"preprocess.store {spec.store!r}: a memory:// store lives inside one process, so Ray workers "
                        "cannot write to it", hint="use a local path, a shared file system path or s3://…/gs://…")
    start = time.perf_counter()
    adapter = adapter_from_spec(spec.dataset)
    remote = RemoteRoot.list(spec.dataset.root) if is_remote_root(spec.dataset.root) else None
    cases = discover(spec, adapter, remote.skeleton if remote else None)
    meta = adapter.metadata()
    settings = settings_from_spec(spec, meta)
    if remote is not None:
        settings = replace(settings, source_uri=remote.uri, skeleton=str(remote.skeleton))
    files = StoreFiles(spec.store)
    todo, kept = plan_store(spec, cases, settings, files, remote)
    log.info("preprocess %s: %d cases, %d to convert, %d reused", job.name, len(cases), len(todo), len(kept))
    rows = convert_dataset(adapter, todo, settings, root_attrs(settings, meta), kept,
                           concurrency=spec.concurrency, memory_mb=spec.memory_per_case_mb)
    files.write_bytes(RESOLVED_NAME, dump_job(job).encode())
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    summary = {"store": spec.store, "cases_ok": len(ok), "cases_failed": len(failed),
               "cases_converted": len(todo), "cases_reused": len(kept),
               "seconds": round(time.perf_counter() - start, 1), "spec_hash": settings.spec_hash}
    message = None
    if failed:
        message = (f"{len(ok)} ok / {len(failed)} failed; failed cases: "
                   + "; ".join(f"{r['case_id']}: {r['error']}" for r in failed[:5]))
    return StageResult(kind="preprocess", ok=not failed, summary=summary,
                       tables=[("cases", _table(rows, {r["case_id"] for r in kept}))], message=message)

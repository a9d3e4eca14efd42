"""Shared helpers for the preprocessing tests: tiny synthetic datasets, job specs and the no-Ray convert loop."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 16)


def synth(root: Path, cases: int = 3, layout: str = "msd_brats", shape=SHAPE) -> Path:
    from voxray.preprocessing.synth import synth_dataset

    return synth_dataset(layout, root, cases=cases, seed=0, shape=shape)


def job(root: Path, store: str, **extra):
    from voxray.platform.specs.loader import validate_job

    pre = {"dataset": {"layout": "msd_brats", "root": str(root)}, "store": store, "spacing": [1.0, 1.0, 1.0],
           "fg_samples_per_class": 50, "chunk": [16, 16, 16], **extra}
    return validate_job({"kind": "preprocess", "name": "pp-test", "preprocess": pre}, base_dir=root)


def convert_loop(job_):
    """The single-process path: plan, convert each case, commit (what the Ray pipeline does, without Ray)."""
    from voxray.preprocessing.cases import convert_case
    from voxray.preprocessing.convert import commit, start
    from voxray.preprocessing.datasets import adapter_from_spec
    from voxray.preprocessing.runner import discover, plan_store, root_attrs, settings_from_spec
    from voxray.preprocessing.store.fs import StoreFiles

    spec = job_.preprocess
    adapter = adapter_from_spec(spec.dataset)
    meta = adapter.metadata()
    settings = settings_from_spec(spec, meta)
    todo, kept = plan_store(spec, discover(spec, adapter), settings, StoreFiles(spec.store))
    start(settings, root_attrs(settings, meta), kept, [c.case_id for c, _ in todo])
    rows = kept + [convert_case(adapter, c, settings, s) for c, s in todo]
    commit(settings, rows, meta["channels"])
    return rows, todo, kept


def rewrite(path: Path, fn) -> None:
    """Load a NIfTI, change its data with fn(data) → data, save it back with the same affine."""
    img = nib.load(str(path))
    data = fn(np.asarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine), str(path))


def truncate(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) // 3]))

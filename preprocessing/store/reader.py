"""`Store`: the read side training and tools use. Only cases with an `ok` manifest row are visible."""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np
import pyarrow as pa

from voxray.platform.errors import DataError
from voxray.preprocessing.store.fs import StoreFiles, local_path
from voxray.preprocessing.store.manifest import read_manifest
from voxray.preprocessing.store.writer import open_root


class Store:
    """A voxray zarr v3 store opened read-only (see docs/CONTRACTS.md, "Store")."""

    def __init__(self, uri: str, root: Any, files: StoreFiles) -> None:
        self.uri = uri
        self._root = root
        self._files = files

    @classmethod
    def open(cls, uri: str) -> "Store":
        """Open `uri` (path or fsspec URI); DataError when it is missing or not a voxray store."""
        uri = str(uri)
        path = local_path(uri)
        if path is not None and not (path / "zarr.json").is_file():
            raise DataError(f"{uri}: no zarr store here", hint="build it first: `voxray run <preprocess job>.yaml`")
        try:
            root = open_root(uri, "r")
        except Exception as exc:  # zarr raises several types for a missing/corrupt group
            raise DataError(f"{uri}: cannot open the zarr store ({type(exc).__name__}: {exc})") from None
        if "voxray_store" not in root.attrs:
            raise DataError(f"{uri}: a zarr group, but not a voxray store (no `voxray_store` attr)")
        return cls(uri, root, StoreFiles(uri))

    @cached_property
    def attrs(self) -> dict:
        return dict(self._root.attrs)

    @property
    def layout(self) -> str:
        return self.attrs.get("layout", "")

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self.attrs.get("channels", ()))

    @property
    def labels(self) -> dict[int, str]:
        return {int(k): v for k, v in (self.attrs.get("labels") or {}).items()}

    @property
    def label_encoding(self) -> str:
        return self.attrs.get("label_encoding", "index")

    @property
    def regions(self) -> dict[str, list[int]] | None:
        return self.attrs.get("regions")

    @property
    def slice_axis(self) -> int | None:
        return self.attrs.get("slice_axis")

    def metadata(self) -> dict:
        """The dataset metadata tasks and model cards need, as plain data."""
        return {"layout": self.layout, "channels": list(self.channels), "labels": self.labels,
                "label_encoding": self.label_encoding, "regions": self.regions, "slice_axis": self.slice_axis}

    def manifest(self) -> pa.Table:
        return self._manifest

    @cached_property
    def _manifest(self) -> pa.Table:
        return read_manifest(self._files)

    @cached_property
    def _ok(self) -> list[str]:
        t = self._manifest
        ids = t.column("case_id").to_pylist()
        status = t.column("status").to_pylist()
        return sorted(i for i, s in zip(ids, status) if s == "ok")

    def case_ids(self) -> list[str]:
        """Ids of cases with an ok manifest row, sorted."""
        return list(self._ok)

    def data_version(self) -> dict:
        """{"hash", "cases": {case id: checksum}} of the ok cases' stored image and label bytes (the manifest's
        sha256s): what training reads, so a run keyed on it notices added, removed and changed cases."""
        import hashlib

        t = self._manifest
        cols = {c: t.column(c).to_pylist() for c in ("case_id", "status", "image_sha256", "label_sha256")}
        cases = {cid: hashlib.sha256(f"{img}:{lab}".encode()).hexdigest()[:16]
                 for cid, st, img, lab in zip(*cols.values()) if st == "ok"}
        digest = hashlib.sha256(json.dumps(cases, sort_keys=True).encode()).hexdigest()[:16]
        return {"hash": digest, "cases": dict(sorted(cases.items()))}

    @cached_property
    def _has_label(self) -> dict[str, bool]:
        """Whether each ok case has a label: the manifest's `has_label`, or (stores written before that column, or
        rows without it) whether `cases/<id>/label` exists, so old stores are judged by what they hold."""
        t = self._manifest
        flags: dict[str, bool | None] = {}
        if "has_label" in t.column_names:
            flags = dict(zip(t.column("case_id").to_pylist(), t.column("has_label").to_pylist()))
        out = {}
        for cid in self._ok:
            flag = flags.get(cid)
            out[cid] = bool(flag) if flag is not None else "label" in self._root[f"cases/{cid}"]
        return out

    def has_label(self, case_id: str) -> bool:
        """True when the case was stored with a label (training and validation use only these)."""
        self._check(case_id)
        return self._has_label[case_id]

    def labelled_case_ids(self) -> list[str]:
        """Ok cases with a label, sorted."""
        return [c for c in self._ok if self._has_label[c]]

    def unlabelled_case_ids(self) -> list[str]:
        """Ok cases without a label (e.g. a dataset's test images), sorted."""
        return [c for c in self._ok if not self._has_label[c]]

    @cached_property
    def _ok_set(self) -> frozenset[str]:
        return frozenset(self._ok)

    def _check(self, case_id: str) -> None:
        if case_id not in self._ok_set:
            raise DataError(f"{self.uri}: no ok case {case_id!r} (see `voxray store ls {self.uri}`)")

    @cached_property
    def _arrays(self) -> dict[tuple[str, str], Any]:
        """Opened case arrays: a training loader reads the same cases thousands of times, and opening one reads and
        parses its metadata (a round trip on an object store). The store is read-only here, so they never go stale."""
        return {}

    def _array(self, case_id: str, name: str) -> Any:
        key = (case_id, name)
        if key not in self._arrays:
            group = self._root[f"cases/{case_id}"]
            self._arrays[key] = group[name] if name in group else None
        return self._arrays[key]

    def image(self, case_id: str):
        """(C, Z, Y, X) zarr.Array; slice it (or `store.boxes.read_box`) to read only the chunks a patch touches."""
        self._check(case_id)
        return self._array(case_id, "image")

    def label(self, case_id: str):
        """(Z, Y, X) uint8 zarr.Array, or None for an unlabelled case."""
        self._check(case_id)
        return self._array(case_id, "label")

    def case_attrs(self, case_id: str) -> dict:
        self._check(case_id)
        return dict(self._root[f"cases/{case_id}"].attrs)

    def fg_coords(self, case_id: str) -> dict[int, np.ndarray]:
        """Foreground voxel coordinates per class: {class: (N, 3) int32 (z, y, x)}."""
        self._check(case_id)
        rows = np.asarray(self._root[f"fg/{case_id}"][...])
        return {int(c): rows[rows[:, 0] == c, 1:] for c in np.unique(rows[:, 0])}

    def fingerprint(self) -> dict:
        if not self._files.exists("fingerprint.json"):
            raise DataError(f"{self.uri}: no fingerprint.json (the conversion never finished)")
        return self._files.read_json("fingerprint.json")

    def __repr__(self) -> str:
        return f"Store({self.uri!r}, layout={self.layout!r}, cases={len(self._ok)})"

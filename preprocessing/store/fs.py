"""Where a store lives: a local path or an fsspec URI (s3://, gs://, memory://, file://).

zarr arrays go through a zarr Store (LocalStore for paths and file://, FsspecStore for the rest); the small side
files (manifest, rows, fingerprint, resolved spec) go through fsspec, written atomically where the backend allows.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import fsspec

from voxray.platform.specs.common import is_uri


def local_path(uri: str) -> Path | None:
    """The local filesystem path behind `uri`, or None for a remote/in-memory store."""
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return None if is_uri(uri) else Path(uri)


def zarr_store(uri: str, *, read_only: bool = False) -> Any:
    """A zarr v3 store object for `uri`."""
    from zarr.storage import FsspecStore, LocalStore

    path = local_path(uri)
    if path is not None:
        if not read_only:
            path.mkdir(parents=True, exist_ok=True)
        return LocalStore(str(path), read_only=read_only)
    return FsspecStore.from_url(uri, read_only=read_only)


class StoreFiles:
    """Side files of a store, addressed by relative key (`manifest.parquet`, `_rows/<id>.json`)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.local = local_path(uri)
        if self.local is None:
            self.fs, self.root = fsspec.core.url_to_fs(uri)
        else:
            self.fs, self.root = fsspec.filesystem("file"), str(self.local)

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def _fresh(self, path: str) -> str:
        """Forget cached listings: Ray tasks on other processes and nodes write rows here (s3fs caches `ls`)."""
        if self.local is None:
            self.fs.invalidate_cache(path)
        return path

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._fresh(self._path(key)))

    def read_bytes(self, key: str) -> bytes:
        return self.fs.cat_file(self._path(key))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Readers see the old file or the new one, never a torn one (temp file + rename locally, one PUT remotely)."""
        if self.local is not None:
            target = self.local / key
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            return
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, data: Any) -> None:
        self.write_bytes(key, json.dumps(data, indent=1, sort_keys=True, default=_jsonable).encode())

    def list(self, prefix: str) -> list[str]:
        """Keys (relative) of the files directly under folder `prefix`."""
        path = self._fresh(self._path(prefix))
        if not self.fs.exists(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        return sorted(f"{prefix}/{n}" for n in names if not n.startswith("."))

    def remove(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

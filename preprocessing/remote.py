"""A dataset root on an object store (`preprocess.dataset.root: s3://bucket/data/Task01`).

Adapters discover cases with path operations only, so the driver lists the bucket once and builds a local
*skeleton* of the root: folders, small text files (dataset.json, CSV tables) copied, every other file an empty
placeholder. Discovery runs on the skeleton unchanged. A case's source checksums come from the listing (ETag and
size: the store computes the ETag from the bytes, so an edited object gets a new one), keyed by the object's URI.
Each conversion task then downloads only its case's files into its own node's cache, converts, and deletes them,
so no node needs more than the cases it is converting and nothing but the object store is shared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from pathlib import Path
from typing import Any

from voxray.platform.errors import DataError
from voxray.platform.paths import join, protocol

log = logging.getLogger(__name__)

TEXT_SUFFIXES = frozenset({".json", ".csv", ".tsv", ".txt", ".yaml", ".yml"})
"""Files copied into the skeleton (adapters read them during discovery); the rest become placeholders."""


@dataclasses.dataclass(frozen=True)
class RemoteRoot:
    """The listing of a remote dataset root and where its skeleton lives on this node."""

    uri: str
    skeleton: Path
    objects: dict[str, dict[str, Any]]
    """Relative key → {"etag", "size"} of every object under the root."""

    @classmethod
    def list(cls, uri: str) -> "RemoteRoot":
        """List `uri` and (re)build its skeleton in this node's cache; DataError when nothing is there."""
        from voxray.platform.storage import cache_dir, fs_for

        fs, root = fs_for(uri)
        root = root.rstrip("/")
        listing = fs.find(root, detail=True)
        objects = {}
        for path, info in listing.items():
            if info.get("type") == "directory" or path.rstrip("/") == root:
                continue
            rel = path[len(root) + 1:]
            etag = str(info.get("ETag") or info.get("etag") or info.get("md5") or "").strip('"')
            objects[rel] = {"etag": etag or None, "size": int(info.get("size") or 0)}
        if not objects:
            raise DataError(f"dataset root {uri} holds no files", hint="check the URI (bucket and prefix)")
        skeleton = cache_dir("datasets", uri) / "skeleton"
        shutil.rmtree(skeleton, ignore_errors=True)
        for rel in objects:
            target = skeleton / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if Path(rel).suffix.lower() in TEXT_SUFFIXES:
                fs.get_file(f"{root}/{rel}", str(target))
            else:
                target.touch()
        log.info("dataset root %s: %d objects listed, skeleton in %s", uri, len(objects), skeleton)
        return cls(uri, skeleton, objects)

    def uri_of(self, local: str | Path) -> str:
        return join(self.uri, Path(local).relative_to(self.skeleton).as_posix())

    def sources(self, files: list[Path]) -> dict[str, dict]:
        """{object URI: {etag, size}} for a case's files (the remote counterpart of `cases.source_info`)."""
        out = {}
        for f in files:
            rel = Path(f).relative_to(self.skeleton).as_posix()
            info = self.objects.get(rel) or {"etag": None, "size": None}
            out[join(self.uri, rel)] = {"etag": info["etag"], "size": info["size"]}
        return out


def localize(case: Any, remote_uri: str, skeleton: str) -> tuple[Any, Path]:
    """(the case with its files downloaded into this node's cache, that folder): run inside a conversion task."""
    from voxray.platform import storage

    base = storage.cache_dir("datasets", remote_uri) / "cases" / hashlib.sha256(case.case_id.encode()).hexdigest()[:12]
    shutil.rmtree(base, ignore_errors=True)

    def fetch(path: Path) -> Path:
        rel = Path(path).relative_to(skeleton).as_posix()
        target = base / rel
        if storage.download(join(remote_uri, rel), target) is None:
            raise DataError(f"{join(remote_uri, rel)}: listed but gone when case {case.case_id} was converted")
        return target

    def swap(value: Any) -> Any:
        if value is None:
            return None
        return tuple(fetch(p) for p in value) if isinstance(value, tuple) else fetch(value)

    images = {name: swap(value) for name, value in case.images.items()}
    return dataclasses.replace(case, images=images, label=swap(case.label)), base


def is_remote_root(root: str) -> bool:
    from voxray.platform.paths import is_remote

    return is_remote(str(root)) and protocol(str(root)) != "file"

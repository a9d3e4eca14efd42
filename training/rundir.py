"""Where a training run's files live: `RunDir(uri, local)`.

`uri` is `<train.output>/<name>`: a local path, or an object-store URI when the nodes of a cluster share no disk.
`local` is this node's working folder: the run dir itself for a local path, else a folder in this node's cache
(`VOXRAY_CACHE_DIR`) that every process on the node uses. For a remote run the object store is the truth: the
driver writes the resolved spec, split, data version and result there; rank 0 pushes its tracking files
(metrics.csv, progress.png, overlays, MLflow) after each validation; Ray Train writes checkpoints straight to
`<uri>/ray` and reads them back on resume, on whichever node the worker lands.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from voxray.platform.paths import is_remote, join

TRACKING = ("metrics.csv", "progress.json", "progress.png", "overlays", "mlflow.db", "mlflow_run_id", "mlartifacts")
"""Files rank 0 writes as it trains (pushed to a remote run dir after each validation and at the end)."""
DATA_FILE = "data.json"
"""The data version (store content hash and per-case checksums) the run trains on."""


@dataclass(frozen=True)
class RunDir:
    uri: str
    local: Path

    @classmethod
    def at(cls, uri: str | Path) -> "RunDir":
        """The run dir at `uri`; a remote one gets this node's cache folder as its working copy."""
        from voxray.platform.storage import cache_dir

        uri = str(uri)
        return cls(uri, cache_dir("runs", uri)) if is_remote(uri) else cls(uri, Path(uri))

    @classmethod
    def of(cls, output: str, name: str) -> "RunDir":
        return cls.at(join(output, name))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "RunDir":
        """A loop config's run dir: `run_uri` when the run is remote (each node derives its own working copy)."""
        uri = config.get("run_uri")
        return cls.at(uri) if uri else cls(str(config["run_dir"]), Path(config["run_dir"]))

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    def child(self, *parts: str) -> str:
        return join(self.uri, *parts) if self.remote else str(self.local.joinpath(*parts))

    def read_text(self, name: str) -> str | None:
        """The file's text from the run dir of record (the object store for a remote run), None if absent."""
        if self.remote:
            from voxray.platform import storage

            raw = storage.read_bytes(join(self.uri, name))
            return None if raw is None else raw.decode()
        path = self.local / name
        return path.read_text() if path.is_file() else None

    def read_json(self, name: str) -> Any:
        text = self.read_text(name)
        return None if text is None else json.loads(text)

    def write_text(self, name: str, text: str) -> Path:
        path = self.local / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        self.push(name)
        return path

    def push(self, *names: str) -> None:
        """Copy the named local files/folders to the object store (no-op for a local run)."""
        if self.remote:
            from voxray.platform import storage

            for name in names:
                storage.upload(self.local / name, join(self.uri, name))

    def pull(self, *names: str, keep_missing: bool = False) -> None:
        """Make the local copies of `names` equal the object store's (removed locally when absent there, unless
        `keep_missing`)."""
        if not self.remote:
            return
        from voxray.platform import storage

        for name in names:
            if storage.download(join(self.uri, name), self.local / name) is None and not keep_missing:
                _remove_local(self.local / name)

    def remove(self, *names: str) -> None:
        """Delete files/folders from the local copy and the object store."""
        for name in names:
            _remove_local(self.local / name)
            if self.remote:
                from voxray.platform import storage

                storage.remove(join(self.uri, name))

    def remove_remote(self, *names: str) -> None:
        """Delete from the object store only (before mirroring a local folder there)."""
        if self.remote:
            from voxray.platform import storage

            for name in names:
                storage.remove(join(self.uri, name))

    def has_checkpoint(self) -> bool:
        if self.remote:
            from voxray.platform import storage

            return bool(storage.glob(join(self.uri, "ray", "*", "checkpoint_*", "state.pt"))
                        or storage.glob(join(self.uri, "checkpoints", "step_*", "state.pt")))
        return any(self.local.glob("checkpoints/step_*/state.pt")) or any(self.local.glob("ray/*/checkpoint_*/state.pt"))

    def ray_storage(self) -> tuple[str, Any]:
        """(storage_path, storage_filesystem) for Ray's RunConfig: checkpoints under `<uri>/ray`."""
        from voxray.platform.storage import ray_storage

        return ray_storage(self.child("ray"))


def _remove_local(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def checkpoint_to_local(checkpoint: Any, rd: RunDir) -> tuple[Path, str]:
    """(local folder, URI or path of record) of a Ray Train Checkpoint: read in place when it is on a local disk,
    downloaded into the run's working copy when it lives on an object store."""
    local = Path(checkpoint.path)
    if not rd.remote and (local / "state.pt").is_file():
        return local, str(local)
    name = checkpoint.path.rstrip("/").rsplit("/", 1)[-1]
    target = rd.local / "best" / name
    if not (target / "state.pt").is_file():
        shutil.rmtree(target, ignore_errors=True)
        checkpoint.to_directory(str(target))
    scheme = rd.uri.split("://", 1)[0]
    return target, f"{scheme}://{checkpoint.path.lstrip('/')}"


def data_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """Why a run's data differs from what it trained on ("2 cases added (a, b), 1 changed (c)"), None if same.
    `old` None (a run dir from before data versions were recorded) counts as the same."""
    if old is None or old.get("hash") == new.get("hash"):
        return None
    before, after = dict(old.get("cases") or {}), dict(new.get("cases") or {})
    parts = []
    for what, ids in (("added", sorted(set(after) - set(before))), ("removed", sorted(set(before) - set(after))),
                      ("changed", sorted(c for c in set(before) & set(after) if before[c] != after[c]))):
        if ids:
            parts.append(f"{len(ids)} case{'s' * (len(ids) != 1)} {what} ({', '.join(ids[:5])}"
                         f"{' …' if len(ids) > 5 else ''})")
    return ", ".join(parts) or "the store's content hash changed"

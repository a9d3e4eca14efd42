"""Artefact paths as fsspec URIs, and the driver-only path check for cluster jobs.

A cluster job's tasks run on many nodes, so every artefact (store, run dir, registry) must live somewhere all of
them see: an object store (`s3://`, `gs://`, …) or a shared filesystem mounted at the same absolute path on every
node. A relative path in a submitted spec resolves inside the job's temporary working dir on one node and is lost;
`memory://` lives in one process. `cluster_path_problems` finds both before anything is uploaded.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = frozenset({"file", "local"})
"""fsspec protocols that mean "this machine's filesystem"."""
PROCESS_PROTOCOLS = frozenset({"memory"})
"""fsspec protocols that exist only inside one process (never shared, not even between Ray workers)."""

ARTIFACT_FIELDS: tuple[str, ...] = (
    "preprocess.dataset.root",
    "preprocess.store",
    "train.store",
    "train.output",
    "train.registry",
    "train.init.path",
    "train.init.registry",
    "tune.output",
    "serve.model",
)
"""Dotted spec paths holding artefact locations (inputs and outputs) that every node must reach."""

_PIPELINE_SENTINEL = "__pipeline__"


def protocol(uri: str) -> str:
    """The fsspec protocol of a path or URI: `s3` for `s3://b/k`, `file` for plain paths."""
    scheme = urlparse(uri).scheme
    # Windows drive letters ("C:\\x") parse as one-letter schemes; they are local paths.
    return scheme.lower() if len(scheme) > 1 else "file"


def is_remote(uri: str) -> bool:
    """True when the path lives outside this machine (object store, HTTP, …): every node can reach it."""
    p = protocol(uri)
    return p not in LOCAL_PROTOCOLS and p not in PROCESS_PROTOCOLS


def open_fs(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for a local path or URI; local writes create parent folders as
    object stores do; a missing backend names its pip package."""
    import fsspec

    options = {"auto_mkdir": True} if protocol(uri) in LOCAL_PROTOCOLS else {}  # object stores have no folders
    try:
        fs, path = fsspec.core.url_to_fs(uri, **options)
    except ImportError as exc:
        from voxray.platform.errors import VoxrayError

        pkg = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(protocol(uri), "")
        raise VoxrayError(f"no fsspec backend for {uri!r}: {exc}",
                          hint=f"pip install {pkg or 'the fsspec backend for ' + protocol(uri)} "
                               "(on the driver and in the cluster image)") from None
    return fs, path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI without mangling `scheme://`."""
    if protocol(uri) == "file" and "://" not in uri:
        return str(PurePosixPath(uri, *parts)) if uri.startswith("/") else "/".join([uri.rstrip("/"), *parts])
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])


def is_loopback_address(address: str) -> bool:
    """True when a cluster address (`http://host:8265`, `host:6379`, `auto`) points at this machine."""
    if address in ("auto", "local"):
        return True
    return is_loopback_host(urlparse(address if "://" in address else f"//{address}").hostname or "")


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IPs (127.0.0.0/8, ::1, bracketed or not): only this machine connects."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class PathProblem:
    """One artefact path a cluster job cannot use as written."""

    field: str
    value: str
    reason: str
    fatal: bool
    """True: submitting would lose data or fail; False: works only on a shared filesystem (a warning)."""

    def __str__(self) -> str:
        return f"{self.field}: {self.value!r} {self.reason}"


def _get(data: dict, dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def cluster_path_problems(raw: dict, resolved: dict, *, remote: bool) -> list[PathProblem]:
    """Check every artefact field of a job for paths the cluster's nodes cannot share.

    `raw` is the spec as written (after --set), `resolved` its validated dump (defaults filled in). A field the
    user left out counts with its default (e.g. `train.registry: registry`, relative to the job file). `remote`:
    the cluster is on other machines, so plain absolute paths need a shared filesystem (a warning, not an error).
    """
    problems: list[PathProblem] = []
    for field in ARTIFACT_FIELDS:
        if _get(resolved, field.split(".")[0]) is None:
            continue  # section absent from this job
        written = _get(raw, field)
        value = written if written is not None else _default_of(resolved, field)
        if not isinstance(value, str) or value.endswith(_PIPELINE_SENTINEL):
            continue
        problem = _classify(field, value, defaulted=written is None, remote=remote)
        if problem is not None:
            problems.append(problem)
    return problems


def _default_of(resolved: dict, field: str) -> str | None:
    """The default a field had before resolution (only relative defaults matter: they are driver-only)."""
    from voxray.platform.specs.train import TrainSpec
    from voxray.platform.specs.tune import TuneSpec

    section, _, name = field.partition(".")
    model = {"train": TrainSpec, "tune": TuneSpec}.get(section)
    if model is None or name not in model.model_fields or _get(resolved, field) is None:
        return None
    default = model.model_fields[name].default
    return default if isinstance(default, str) else None


def _classify(field: str, value: str, *, defaulted: bool, remote: bool) -> PathProblem | None:
    proto = protocol(value)
    if proto in PROCESS_PROTOCOLS:
        return PathProblem(field, value, f"lives inside one process ({proto}://); cluster nodes cannot share it",
                           fatal=True)
    if proto not in LOCAL_PROTOCOLS:
        return None
    path = urlparse(value).path if "://" in value else value
    if not (path.startswith("/") or path.startswith("~")):
        why = "(the default) " if defaulted else ""
        return PathProblem(field, value, f"{why}is relative: on a cluster it resolves inside the job's temporary "
                                         "working dir on one node and is lost", fatal=True)
    if remote:
        return PathProblem(field, value, "is a local path: every node must mount it at the same place "
                                         "(shared filesystem), or it exists only on the driver", fatal=False)
    return None


PATH_HINT = ("point the field at storage every node shares, e.g. "
             "`--set {field}=s3://bucket/voxray/...` or an absolute path on a shared filesystem (NFS, EFS, Filestore)")

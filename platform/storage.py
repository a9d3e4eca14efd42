"""Object-store access for artefacts: the pre-Ray storage check, node-local working copies of remote folders, and
the pyarrow filesystem that Ray Train and Tune write checkpoints through.

Credentials never come from a spec. For S3 they come from the backend's own chain: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), or a named profile (AWS_PROFILE + ~/.aws/credentials), or an
instance role; AWS_ENDPOINT_URL (or the profile's `endpoint_url`) selects an S3-compatible store (MinIO,
SeaweedFS, Ceph). `check_storage` runs before Ray starts, so a missing bucket, rejected credentials or an
unreachable endpoint fail in a second with the field, the URI and the cause, not inside a Ray task an hour later.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from voxray.platform.errors import VoxrayError
from voxray.platform.paths import ARTIFACT_FIELDS, is_remote, open_fs, protocol

log = logging.getLogger(__name__)

CACHE_ENV = "VOXRAY_CACHE_DIR"
"""Node-local folder for working copies of remote run dirs and downloaded models (default ~/.cache/voxray)."""
PIPELINE_SENTINEL = "__pipeline__"


class StorageError(VoxrayError):
    """An artefact URI that cannot be used: no bucket, credentials refused, endpoint unreachable."""

    exit_code = 4


@dataclass(frozen=True)
class Probe:
    """One bucket to check, with the spec field and URI that named it first."""

    field: str
    uri: str


def cache_dir(kind: str, uri: str) -> Path:
    """This node's working folder for the remote `uri` (stable per URI, so a rerun on the same node reuses it)."""
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "voxray").expanduser()
    tail = uri.rstrip("/").rsplit("/", 1)[-1] or "root"
    digest = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:12]
    return base / kind / f"{tail}-{digest}"


def endpoint() -> str | None:
    """The S3 endpoint in effect (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL or the profile's), for messages."""
    env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if env:
        return env
    try:
        import botocore.session

        return botocore.session.get_session().get_config_variable("endpoint_url")
    except Exception:  # no botocore, or a broken profile: the probe reports it
        return None


def credential_source() -> str:
    """Where S3 credentials come from, without the secrets ("environment", "profile 'x'", "none found")."""
    try:
        import botocore.session

        creds = botocore.session.get_session().get_credentials()
    except Exception as exc:  # a profile that does not exist raises here
        return f"unusable ({type(exc).__name__}: {exc})"
    if creds is None:
        return "none found"
    method = getattr(creds, "method", "") or "unknown"
    profile = os.environ.get("AWS_PROFILE")
    return {"env": "the environment (AWS_ACCESS_KEY_ID)",
            "shared-credentials-file": f"profile {profile or 'default'!r} (~/.aws/credentials)",
            "config-file": f"profile {profile or 'default'!r} (~/.aws/config)"}.get(method, method)


def probes(job_data: dict) -> list[Probe]:
    """The remote artefact URIs of a job (model_dump), one per bucket, in field order."""
    out: dict[tuple[str, str], Probe] = {}
    for field in ARTIFACT_FIELDS:
        node: Any = job_data
        for part in field.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, str) or not is_remote(node) or node.endswith(PIPELINE_SENTINEL):
            continue
        parsed = urlparse(node)
        out.setdefault((protocol(node), parsed.netloc), Probe(field, node))
    return list(out.values())


def check_storage(job: Any) -> None:
    """Probe every bucket the job names (reachable, credentials accepted, bucket exists) before Ray starts."""
    for probe in probes(job.model_dump(mode="json")):
        check_uri(probe.uri, probe.field)


def check_uri(uri: str, field: str = "") -> None:
    """StorageError naming `field`, `uri` and the cause when the bucket of `uri` cannot be used."""
    where = f"{field}: {uri}" if field else uri
    if protocol(uri) in ("s3", "s3a"):
        _check_s3(uri, where)
        return
    fs, path = open_fs(uri)
    bucket = path.split("/", 1)[0]
    try:
        fs.ls(bucket)
    except FileNotFoundError:
        raise StorageError(f"{where}: bucket {bucket!r} does not exist") from None
    except PermissionError as exc:
        raise StorageError(f"{where}: access denied ({exc})",
                           hint="check the credentials the fsspec backend uses") from None
    except Exception as exc:
        raise StorageError(f"{where}: the object store cannot be reached ({type(exc).__name__}: {exc})") from None


def _check_s3(uri: str, where: str) -> None:
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    parsed = urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.strip("/")
    url = endpoint()
    at = f" at {url}" if url else ""
    try:
        client = botocore.session.get_session().create_client(
            "s3", config=Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2}))
        client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except NoCredentialsError:
        raise StorageError(f"{where}: no S3 credentials found", hint=CREDENTIALS_HINT) from None
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        text = exc.response.get("Error", {}).get("Message", "") or str(exc)
        if code in ("NoSuchBucket", "404"):
            raise StorageError(f"{where}: bucket {bucket!r} does not exist{at}",
                               hint=f"create it first (e.g. `aws s3 mb s3://{bucket}"
                                    f"{' --endpoint-url ' + url if url else ''}`) or fix the URI") from None
        if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken",
                    "InvalidClientTokenId", "AuthorizationHeaderMalformed"):
            raise StorageError(f"{where}: the object store{at} rejected the credentials from {credential_source()} "
                               f"({code}: {text})", hint=CREDENTIALS_HINT) from None
        raise StorageError(f"{where}: the object store{at} refused access to bucket {bucket!r} with the credentials "
                           f"from {credential_source()} ({code}: {text})",
                           hint="grant s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it") from None
    except (BotoCoreError, OSError) as exc:
        raise StorageError(f"{where}: cannot reach the S3 endpoint {url or '(AWS default)'} "
                           f"({type(exc).__name__}: {exc})",
                           hint="check AWS_ENDPOINT_URL (S3-compatible stores) and that the endpoint is up and "
                                "reachable from this machine") from None


CREDENTIALS_HINT = ("S3 credentials come only from the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY, or "
                    "AWS_PROFILE naming a profile in ~/.aws/credentials (never from the job YAML); on a cluster pass "
                    "them by name: `voxray submit … --env-var AWS_ACCESS_KEY_ID --env-var AWS_SECRET_ACCESS_KEY`")


def ray_storage(uri: str) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for Ray's RunConfig: local paths as they are, remote URIs through the
    same fsspec backend (and so the same credentials and endpoint) as the rest of voxray."""
    if not is_remote(uri):
        return str(Path(uri).expanduser().resolve()), None
    import pyarrow.fs as pafs

    fs, path = open_fs(uri)
    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def fs_for(uri: str) -> tuple[Any, str]:
    """(filesystem, path) with fresh listings (other processes and nodes write here)."""
    fs, path = open_fs(uri)
    fs.invalidate_cache()  # other processes and nodes write here: listings must not be stale
    return fs, path


def exists(uri: str) -> bool:
    fs, path = fs_for(uri)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes | None:
    """The object's bytes, or None when it does not exist."""
    fs, path = fs_for(uri)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        return None


def write_bytes(uri: str, data: bytes) -> None:
    """One PUT (object stores) or a local write; readers never see a torn object."""
    fs, path = open_fs(uri)
    fs.pipe_file(path, data)


def glob(pattern_uri: str) -> list[str]:
    """Matching URIs (with their scheme) under a remote pattern."""
    fs, path = fs_for(pattern_uri)
    scheme = protocol(pattern_uri)
    return sorted(f"{scheme}://{p}" for p in fs.glob(path))


def remove(uri: str) -> None:
    fs, path = fs_for(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def upload(local: Path, uri: str, *, changed_only: bool = True) -> int:
    """Copy a local file or folder to `uri` (files whose size already matches are skipped); returns files sent."""
    local = Path(local)
    if not local.exists():
        return 0
    fs, root = fs_for(uri)
    files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
    remote_sizes: dict[str, int] = {}
    if changed_only and local.is_dir() and fs.exists(root):
        remote_sizes = {p: int(info.get("size") or 0) for p, info in fs.find(root, detail=True).items()}
    sent = 0
    for f in files:
        target = root if local.is_file() else f"{root.rstrip('/')}/{f.relative_to(local).as_posix()}"
        if remote_sizes.get(target.lstrip("/")) == f.stat().st_size or remote_sizes.get(target) == f.stat().st_size:
            continue
        fs.put_file(str(f), target)
        sent += 1
    return sent


def download(uri: str, local: Path) -> Path | None:
    """Copy a remote file or folder to `local` (replacing it); None when `uri` does not exist."""
    fs, path = fs_for(uri)
    if not fs.exists(path):
        return None
    local = Path(local)
    part = f".{local.name}.{uuid.uuid4().hex[:8]}.part"  # processes on one node may fetch the same file at once
    if fs.isdir(path):
        root = path.rstrip("/")
        files = [p for p, info in fs.find(path, detail=True).items()
                 if info.get("type") != "directory" and p.rstrip("/") != root]
        if not files:  # an empty folder entry (some S3 servers keep one after its objects are deleted)
            return None
        tmp = local.with_name(part)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for remote in files:
            rel = remote[len(root) + 1:] if remote.startswith(root + "/") else remote
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(remote, str(target))
        shutil.rmtree(local, ignore_errors=True)
        try:
            tmp.rename(local)
        except OSError:  # another process put the same copy there first
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(part)
        fs.get_file(path, str(tmp))
        tmp.replace(local)
    return local


def upload_many(local_dir: Path, uri: str, names: Iterable[str]) -> None:
    """Push the named files/folders of `local_dir` to the same names under `uri`."""
    from voxray.platform.paths import join

    for name in names:
        upload(Path(local_dir) / name, join(uri, name))

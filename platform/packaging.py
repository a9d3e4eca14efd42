"""Build the voxray wheel that a cluster job ships in `runtime_env.py_modules`.

Ray installs a py_modules wheel with `pip install <whl> --target=…`, which would also install every
`Requires-Dist` (ray, torch, monai, …) into the job's private dir — gigabytes, and impossible offline. The cluster
image already holds those, so the shipped wheel is *thin*: its metadata lists no dependencies. The build runs on a
copy of the source tree, so the shared working tree gets no `build/` or `*.egg-info` litter.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from voxray.platform.errors import VoxrayError

log = logging.getLogger(__name__)

SOURCE_FOLDERS = ("platform", "preprocessing", "training", "serving")
"""The four folders that pyproject maps onto voxray.* (package-dir)."""
_DROP_METADATA = ("Requires-Dist:", "Provides-Extra:")


def find_source_root(start: Path | None = None) -> Path:
    """The voxray source tree (pyproject.toml + the four source folders) this process was imported from."""
    here = Path(start) if start else Path(__file__).resolve().parent
    for candidate in (here, *here.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and 'name = "voxray"' in pyproject.read_text() and (candidate / "platform").is_dir():
            return candidate
    raise VoxrayError("voxray is not running from a source tree, so there is no wheel to build and ship",
                      hint="submit with --no-wheel to use the voxray installed in the cluster image "
                           "(infra/Dockerfile), or run from a git checkout")


def _copy_tree(root: Path, dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).is_file():
            shutil.copy2(root / name, dest / name)
    for folder in SOURCE_FOLDERS:
        if (root / folder).is_dir():
            shutil.copytree(root / folder, dest / folder, ignore=ignore)


def build_wheel(out_dir: Path, *, root: Path | None = None, thin: bool = True) -> Path:
    """`pip wheel . --no-deps` on a copy of the source tree into `out_dir`; thin=True: see `thin_wheel`."""
    root = root or find_source_root()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="voxray-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        _copy_tree(root, src)
        cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
               "--quiet", "--wheel-dir", str(out_dir)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise VoxrayError(f"building the voxray wheel failed:\n{proc.stderr.strip()[-2000:]}",
                          hint="run `pip wheel . --no-deps` in the repo to see the full error "
                               "(setuptools>=68 and wheel must be installed)")
    wheels = sorted(out_dir.glob("voxray-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        raise VoxrayError(f"pip reported success but wrote no voxray wheel into {out_dir}")
    wheel = wheels[-1]
    if thin:
        wheel = thin_wheel(wheel)
    log.info("built %s (%.1f kB) in %.1f s", wheel.name, wheel.stat().st_size / 1024, time.perf_counter() - t0)
    return wheel


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _content_tag(files: dict[str, bytes]) -> str:
    """8 hex digits of the package files' hash (dist-info excluded): the wheel's local version label."""
    h = hashlib.sha256()
    for name in sorted(n for n in files if ".dist-info/" not in n):
        h.update(name.encode() + b"\0" + files[name])
    return h.hexdigest()[:8]


def thin_wheel(wheel: Path) -> Path:
    """Rewrite a wheel without Requires-Dist/Provides-Extra and with a content-hash local version.

    Ray keys an uploaded py_modules wheel by its file name and skips the upload when the name exists on the
    cluster, so `voxray-0.1.0` edited and resubmitted would run the stale copy; `voxray-0.1.0+<hash>` cannot.
    RECORD hashes are rewritten so pip accepts the result. Returns the new path (the old file is removed).
    """
    with zipfile.ZipFile(wheel) as zf:
        entries = [(info, zf.read(info.filename)) for info in zf.infolist()]
    files = {info.filename: data for info, data in entries}
    old_info = next(n.split("/")[0] for n in files if n.endswith(".dist-info/METADATA"))
    dist, version = old_info.removesuffix(".dist-info").split("-", 1)
    new_version = f"{version.split('+')[0]}+{_content_tag(files)}"
    new_info = f"{dist}-{new_version}.dist-info"
    out: dict[str, bytes] = {}
    for name, data in files.items():
        if name == f"{old_info}/METADATA":
            lines = data.decode().splitlines(keepends=True)
            data = "".join(f"Version: {new_version}\n" if ln.startswith("Version:") else ln
                           for ln in lines if not ln.startswith(_DROP_METADATA)).encode()
        out[name.replace(f"{old_info}/", f"{new_info}/", 1)] = data
    record_name = f"{new_info}/RECORD"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in out.items() if name != record_name]
    out[record_name] = ("\n".join(record + [f"{record_name},,"]) + "\n").encode()
    target = wheel.with_name(f"{dist}-{new_version}-{wheel.name.split('-', 2)[2]}")
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in out.items():
            zf.writestr(name, data)
    wheel.unlink()
    tmp.replace(target)
    return target


def wheel_requirements(wheel: Path) -> list[str]:
    """The Requires-Dist lines of a wheel (empty for a thin wheel)."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Requires-Dist:")]

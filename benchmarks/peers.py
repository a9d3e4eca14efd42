"""Peers run for real, in their own venv: nnU-Net v2 lives in .venv-peers (`make bench-peers`), apart from voxray's
venv so its dependencies (and no torchvision/timm/CUDA) never enter it. Benchmarks drive it through `NnUNetPeer`,
a subprocess speaking JSON lines (see _nnunet_peer.py). Where the venv is missing every peer row says
`NOT_INSTALLED` — a stand-in would be a different program.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = Path(os.environ.get("VOXRAY_PEER_VENV", ROOT / ".venv-peers"))
NOT_INSTALLED = "peer not installed"
NNUNET_VERSION = "2.8.1"


@lru_cache(maxsize=None)
def peer_python() -> Path | None:
    """The peer venv's python when nnU-Net imports there, else None."""
    python = PEER_VENV / "bin" / "python"
    if not python.is_file():
        return None
    probe = subprocess.run([str(python), "-c", "import nnunetv2, blosc2, acvl_utils; print('ok')"],
                           capture_output=True, text=True, env=_env())
    return python if probe.returncode == 0 and probe.stdout.strip() == "ok" else None


def peer_version() -> str | None:
    python = peer_python()
    if python is None:
        return None
    out = subprocess.run([str(python), "-c", "from importlib.metadata import version; print(version('nnunetv2'))"],
                         capture_output=True, text=True, env=_env())
    return out.stdout.strip() or None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.setdefault("nnUNet_n_proc_DA", "1")
    return env


class PeerError(RuntimeError):
    """The peer process failed a request (its traceback is in the log file)."""


class NnUNetPeer:
    """A running nnU-Net peer with its own nnUNet_raw/_preprocessed/_results under `work`; stderr goes to `log`."""

    def __init__(self, work: Path, log: Path) -> None:
        python = peer_python()
        if python is None:
            raise PeerError(f"nnU-Net {NOT_INSTALLED}: run `make bench-peers`")
        work.mkdir(parents=True, exist_ok=True)
        self.log_path = log
        self._log = open(log, "ab")
        self.proc = subprocess.Popen([str(python), str(Path(__file__).with_name("_nnunet_peer.py")), str(work)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     env=_env(), cwd=str(work))

    def call(self, op: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise PeerError(f"nnU-Net peer exited (rc {self.proc.poll()}); see {self.log_path}")
        out = json.loads(line)
        if not out.pop("ok"):
            raise PeerError(f"nnU-Net peer: {op} failed: {out['error']} (traceback in {self.log_path})")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()

    def __enter__(self) -> "NnUNetPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

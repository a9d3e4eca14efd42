"""A real multi-node Ray cluster on this machine, for tests: separate `ray start --block` processes per node.

Isolation from other Ray users on the same machine (other engineers, the in-process test fixture):
every node gets its own --temp-dir and its own free ports, and teardown kills only the process sessions this
harness started (each `ray start --block` runs in a new session; raylet, GCS, dashboard and workers inherit it).
`ray stop` is never used: it kills every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 1000}
"""Detect a dead node in ~3 s instead of ~30 s, so the node-death test fits CI."""
WORKER_PORTS = 48
NODE_PORTS = 6 + WORKER_PORTS
"""Ports per node: raylet, object manager, agent ×2, runtime-env agent, metrics, then one per worker process."""


def free_ports(n: int) -> list[int]:
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


def _session_pids(sid: int) -> list[int]:
    """Every live process in session `sid` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3] = session id, fields[0] = state
            pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path

    def pids(self) -> list[int]:
        return _session_pids(self.proc.pid)

    def raylet_pid(self) -> int | None:
        for pid in self.pids():
            if "/raylet" in _cmdline(pid).split(" ")[0]:
                return pid
        return None

    def kill(self) -> None:
        """SIGKILL everything this node started (its whole session), then reap `ray start`."""
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@dataclass
class LocalCluster:
    """Head + worker nodes as separate processes; `env` is what every client of this cluster must use."""

    root: Path
    env: dict[str, str]
    nodes: list[Node] = field(default_factory=list)
    gcs_address: str = ""
    dashboard_url: str = ""

    @classmethod
    def create(cls, root: Path, token: str) -> "LocalCluster":
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("RAY_ADDRESS", None)
        env.pop("RAY_AUTH_TOKEN_PATH", None)
        for name in [n for n in env if n.startswith("AWS_")] + ["VOXRAY_CACHE_DIR"]:
            env.pop(name)  # nodes get object-store credentials only through a job's --env-var, as on a real cluster
        return cls(root=Path(root), env=env)

    def _start(self, name: str, args: list[str], extra_ports: list[int]) -> Node:
        """`ray start --block` in its own session; all ports come from one free-port draw so none collide."""
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        p = extra_ports
        cmd = [str(VENV_BIN / "ray"), "start", "--block", f"--temp-dir={temp_dir}", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--node-manager-port={p[0]}", f"--object-manager-port={p[1]}",
               f"--dashboard-agent-listen-port={p[2]}", f"--dashboard-agent-grpc-port={p[3]}",
               f"--runtime-env-agent-port={p[4]}", f"--metrics-export-port={p[5]}",
               f"--worker-port-list={','.join(map(str, p[6:]))}", "--object-store-memory=120000000", *args]
        log = temp_dir.parent / f"{name}.log"
        for sub in ("cache", "tmp", "work"):
            (temp_dir / sub).mkdir(exist_ok=True)
        # a node's own disk: its cache of remote run dirs/models, temp files and working dir (share-nothing tests)
        env = {**self.env, "VOXRAY_CACHE_DIR": str(temp_dir / "cache"), "TMPDIR": str(temp_dir / "tmp")}
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=temp_dir / "work")
        node = Node(name=name, proc=proc, temp_dir=temp_dir, log=log)
        self.nodes.append(node)
        return node

    def start_head(self, num_cpus: int = 1) -> None:
        gcs, dash, client, *ports = free_ports(3 + NODE_PORTS)
        self._start("head", ["--head", f"--port={gcs}", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                             f"--ray-client-server-port={client}", f"--num-cpus={num_cpus}",
                             f"--system-config={json.dumps(SYSTEM_CONFIG)}"], ports)
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.dashboard_url = f"http://127.0.0.1:{dash}"
        self.wait_nodes(1, timeout=60)

    def add_worker(self, name: str, resources: dict[str, float], num_cpus: int = 1) -> Node:
        node = self._start(name, [f"--address={self.gcs_address}", f"--num-cpus={num_cpus}",
                                  f"--resources={json.dumps(resources)}"], free_ports(NODE_PORTS))
        self.wait_nodes(sum(1 for n in self.nodes), timeout=60)
        return node

    def api(self, path: str) -> dict:
        """GET a dashboard endpoint with the cluster token."""
        req = urllib.request.Request(self.dashboard_url + path,
                                     headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def alive_nodes(self) -> list[dict]:
        data = self.api("/api/v0/nodes?limit=100&detail=true")
        return [n for n in data["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def wait_nodes(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc.poll() is not None:
                    raise RuntimeError(f"ray start for {node.name} exited:\n{node.log.read_text()[-3000:]}")
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except Exception as exc:  # dashboard not up yet
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"{count} Ray nodes not alive after {timeout} s (last error: {last})")

    def node_id_with(self, resource: str) -> str:
        for n in self.alive_nodes():
            if resource in (n.get("resources_total") or {}):
                return n["node_id"]
        raise LookupError(f"no alive node has resource {resource!r}")

    def tasks(self, job_id: str) -> list[dict]:
        """Tasks of one Ray job (hex job id) from the State API: name, state, node_id, attempt."""
        data = self.api(f"/api/v0/tasks?limit=10000&detail=true&filter_keys=job_id&filter_predicates=%3D"
                        f"&filter_values={job_id}")
        return data["data"]["result"]["result"]

    def actors(self, job_id: str) -> list[dict]:
        """Actors of one Ray job (hex job id): class_name, state, node_id."""
        data = self.api(f"/api/v0/actors?limit=10000&detail=true&filter_keys=job_id&filter_predicates=%3D"
                        f"&filter_values={job_id}")
        return data["data"]["result"]["result"]

    def shutdown(self) -> None:
        for node in reversed(self.nodes):
            node.kill()

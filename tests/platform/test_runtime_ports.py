"""An embedded Ray listens on loopback only: every listening socket of the driver and the Ray processes it starts
(GCS, raylet, workers, dashboard and its agents, Serve's proxy on a loopback `serve.host`) is on 127.0.0.1.

Runs in a fresh interpreter: the test session's own Ray is already up, and `ray_runtime` would reuse it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent("""
    import json, socket, time
    import psutil
    from ray import serve
    from voxray.platform.runtime import ray_runtime
    from voxray.platform.specs.common import RaySpec

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    with ray_runtime(RaySpec(num_cpus=1, dashboard=True)) as info:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        time.sleep(2)  # the dashboard agents bind their ports shortly after ray.init returns
        me = psutil.Process()
        seen = []
        for proc in [me, *me.children(recursive=True)]:
            try:
                for c in proc.net_connections(kind="inet"):
                    if c.status == psutil.CONN_LISTEN:
                        seen.append([proc.name(), c.laddr.ip, c.laddr.port])
            except psutil.Error:
                pass
        serve.shutdown()
        print("LISTEN " + json.dumps({"embedded": info.embedded, "gcs": info.address, "sockets": seen,
                                     "serve_port": port}))
""")


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_embedded_ray_listens_on_loopback_only(tmp_path):
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("LISTEN ")), None)
    assert line, out.stdout[-2000:] + out.stderr[-4000:]
    found = json.loads(line[len("LISTEN "):])
    assert found["embedded"] and found["gcs"].startswith("127.0.0.1:")
    names = {name for name, _, _ in found["sockets"]}
    assert {"gcs_server", "raylet"} <= names, names  # the walk saw Ray's own servers
    assert any(port == found["serve_port"] for _, _, port in found["sockets"])  # and Serve's proxy
    exposed = [s for s in found["sockets"] if not _loopback(s[1])]
    assert not exposed, f"listening beyond loopback: {exposed}"

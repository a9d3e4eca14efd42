"""A 2-node Ray cluster (head + `node_b`) in separate processes, shared by the multi-node tests of this folder.

It never touches the in-process `ray_session` fixture: the pytest process talks to it only over HTTP (Jobs and
State APIs) and through `voxray` subprocesses. Token auth is on with a random token, so every client here
exercises the token path. Teardown kills only the processes this fixture started, also when a test fails.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _raycluster import LocalCluster  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    root = Path(tmp_path_factory.mktemp("raycluster"))
    # Ray's session paths are long: keep the unix-socket paths under the 107-byte limit
    short = Path("/tmp") / f"vxc-{os.getpid()}-{secrets.token_hex(3)}"
    short.symlink_to(root)
    cluster = LocalCluster.create(short, token=secrets.token_hex(16))
    try:
        cluster.start_head(num_cpus=1)
        cluster.add_worker("node_b", {"node_b": 1}, num_cpus=1)
        yield cluster
    finally:
        cluster.shutdown()
        short.unlink(missing_ok=True)

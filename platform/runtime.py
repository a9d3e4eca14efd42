"""Ray runtime: one context manager that starts an embedded local Ray or connects to a cluster."""

from __future__ import annotations

import logging
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from voxray.platform.errors import VoxrayError
from voxray.platform.specs.common import RaySpec
from voxray.platform.specs.env import runtime_env_vars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayInfo:
    address: str
    """GCS address of the cluster in use."""
    embedded: bool
    """True when this process started Ray (and will stop it)."""
    dashboard_url: str | None
    resources: dict


def _pinned_dashboard() -> dict:
    """Dashboard on a known free port, announced to every worker as RAY_API_SERVER_ADDRESS.

    Ray Train's PlacementGroupCleaner (a detached actor) asks the state API whether a Train controller died; with
    no address it auto-detects the cluster and fails when several Ray instances run on the machine (CI, shared
    boxes), so placement groups of trials stopped by Tune leak and later trials wait forever.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}}}


@contextmanager
def _loopback_node() -> Iterator[dict]:
    """ray.init arguments that keep an embedded Ray's own servers (GCS, raylet, object manager, workers, dashboard
    and its agents) on 127.0.0.1, so nothing of Ray listens on the machine's network interfaces.

    Ray's Linux default binds every server to all interfaces and turns a `_node_ip_address` of 127.0.0.1 into the
    machine's routable IP (`services.resolve_ip_for_localhost`); only its single-machine mode (the default on macOS
    and Windows, flag `ray_constants.ENABLE_RAY_CLUSTER`) keeps the loopback address. The flag is read when the
    node starts, so it is switched for `ray.init` only; tests/platform/test_runtime_ports.py lists the listening
    sockets of the Ray processes, so a Ray release that changes this fails there.
    """
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    if saved is None:
        log.warning("this Ray release has no ray_constants.ENABLE_RAY_CLUSTER: its servers may listen on all "
                    "interfaces")
        yield {"dashboard_host": "127.0.0.1"}
        return
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield {"_node_ip_address": "127.0.0.1", "dashboard_host": "127.0.0.1"}
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _with_env_vars(runtime_env: dict | None, env_vars: dict[str, str]) -> dict | None:
    """`runtime_env` plus `env_vars` (the secret names workers must redact), without changing the caller's dict."""
    if not env_vars:
        return runtime_env
    merged = dict(runtime_env or {})
    merged["env_vars"] = {**(merged.get("env_vars") or {}), **env_vars}
    return merged


@contextmanager
def ray_runtime(spec: RaySpec | None = None, address: str | None = None) -> Iterator[RayInfo]:
    """Start an embedded Ray (spec.address null) or connect to `address`/`spec.address`; reuse one already up.

    An embedded Ray is a single node: all its own ports bind to 127.0.0.1 (`_loopback_node`); only Serve's HTTP
    proxy listens where `serve.host` says. Only a Ray started here is shut down on exit, so tests can share one
    session-wide Ray.
    """
    import ray

    spec = spec or RaySpec()
    target = address or spec.address
    started = False
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=True, configure_logging=True)
        if target is None:
            kwargs.update(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, include_dashboard=spec.dashboard)
            if spec.object_store_memory_mb:
                kwargs["object_store_memory"] = spec.object_store_memory_mb * 1024 * 1024
            if spec.dashboard:
                kwargs.update(_pinned_dashboard())
        else:
            kwargs.update(address=target, runtime_env=spec.runtime_env)
        kwargs["runtime_env"] = _with_env_vars(kwargs.get("runtime_env"), runtime_env_vars())
        try:
            if target is None:
                with _loopback_node() as loopback:
                    ctx = ray.init(**kwargs, **loopback)
            else:
                ctx = ray.init(**kwargs)
        except ConnectionError as exc:
            raise VoxrayError(f"cannot connect to Ray at {target!r}: {exc}",
                              hint="is the cluster up? (`ray status`), or drop --address to use an embedded Ray") from None
        started = True
        log.info("Ray %s at %s", "started" if target is None else "connected", ctx.address_info.get("gcs_address"))
    else:
        ctx = None
    try:
        gcs = ray.get_runtime_context().gcs_address
        dash = getattr(ctx, "dashboard_url", None) if ctx is not None else None
        yield RayInfo(address=gcs, embedded=started and target is None, dashboard_url=dash,
                      resources=ray.cluster_resources())
    finally:
        if started:
            ray.shutdown()

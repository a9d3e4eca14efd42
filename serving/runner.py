"""`serve` stage runner: start Ray Serve on the spec's host/port with the registry model, return its URL."""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from typing import Any

from voxray.platform.stages import StageResult
from voxray.serving.auth import server_digests
from voxray.serving.validation import Limits
from voxray.training.registry import read_card, resolve_version

log = logging.getLogger(__name__)


def replica_config(spec: Any, host: str | None = None) -> Any:
    """The plain-data replica config for a `ServeSpec`: reads the API keys from the env var the spec names, and
    refuses a keyless server unless the spec allows anonymous access and `host` (the real bind address; None when
    it is unknown, as in a RayService) is loopback."""
    from dataclasses import asdict

    from voxray.serving.deployment import ReplicaConfig

    digests = server_digests(spec.api_key_env, spec.allow_anonymous, host)
    return ReplicaConfig(model_path=str(resolve_version(spec.model)), key_digests=digests,
                         public_docs=spec.public_docs,
                         limits=asdict(Limits.from_spec(spec.limits)), use_gpu=spec.use_gpu, overlap=spec.sw_overlap,
                         qa=spec.qa, backend=spec.backend,
                         num_threads=max(1, math.ceil(spec.num_cpus)), max_batch_size=spec.max_batch_size,
                         batch_wait_timeout_s=spec.batch_wait_timeout_s, dicom_series=spec.dicom_series)


def start_serving(spec: Any, app_name: str) -> str:
    """Deploy the model behind the spec's host/port (Ray already up); returns the base URL once ready."""
    from ray import serve

    from voxray.serving.deployment import build_deployment

    cfg = replica_config(spec, host=spec.host)
    auto = spec.autoscaling
    app = build_deployment(cfg, min_replicas=auto.min_replicas, max_replicas=auto.max_replicas,
                           target_ongoing_requests=auto.target_ongoing_requests,
                           max_ongoing_requests=spec.max_ongoing_requests, num_cpus=spec.num_cpus,
                           drain_timeout_s=spec.drain_timeout_s)
    serve.start(http_options={"host": spec.host, "port": spec.port})
    serve.run(app, name=app_name, route_prefix=spec.route_prefix, blocking=False)
    host = f"[{spec.host}]" if ":" in spec.host else spec.host
    return f"http://{host}:{spec.port}{spec.route_prefix.rstrip('/')}"


def stop_serving(app_name: str) -> None:
    """Stop gracefully: delete the app first (blocks while its replicas finish the requests they hold, up to
    `serve.drain_timeout_s`), then stop Serve's proxies and controller."""
    from ray import serve

    try:
        serve.delete(app_name)
    finally:
        serve.shutdown()


def _sigterm_stops() -> None:
    """SIGTERM (docker stop, Kubernetes, systemd) takes the same graceful path as Ctrl-C."""
    def stop(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def run_serve(job: Any) -> StageResult:
    """Serve `job.serve`; blocks until Ctrl-C or SIGTERM when `serve.blocking` (then drains in-flight requests and
    shuts Serve down), else returns."""
    spec = job.serve
    card = read_card(spec.model)
    url = start_serving(spec, job.name)
    log.info("serving %s v%s at %s", card.get("name"), card.get("version"), url)
    summary = {"url": url, "model": card.get("name"), "version": card.get("version"),
               "channels": ", ".join(card["channels"]), "docs": f"{url}/docs", "viewer": f"{url}/viewer/"}
    if not spec.blocking:
        return StageResult(kind="serve", summary=summary)
    from voxray.platform.cli import _output

    _output.result(f"serving [bold]{card.get('name')}[/] v{card.get('version')} at {url}, viewer {url}/viewer/ "
                   "(Ctrl-C stops)")
    try:
        _sigterm_stops()
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        log.info("stopping Serve: finishing requests in flight (up to %g s)", spec.drain_timeout_s)
    finally:
        stop_serving(job.name)
    return StageResult(kind="serve", summary=summary)

"""Ray Serve adapter: one replica = one model loaded once in `__init__`, FastAPI routes from app.py, and
`@serve.batch` gathering concurrent requests' volumes into shared forward passes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from ray import serve

from voxray.serving.app import build_app
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Inferred, Predictor, Request

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicaConfig:
    """Everything a replica needs, plain data (it travels in the deployment's init args)."""

    model_path: str
    key_digests: tuple[str, ...] | None
    """SHA-256 of each accepted API key; None = anonymous (loopback only, see auth.server_digests)."""
    limits: dict
    public_docs: bool = False
    use_gpu: bool = False
    overlap: float | None = None
    """Sliding-window overlap; None = the model card's `inference.overlap`."""
    qa: str | None = None
    backend: str | None = None
    """torch or onnxruntime (CPU, after `voxray export --onnx`); None = the model card's `inference.backend`."""
    """Input QA policy (warn, refuse, off); None = the model card's `inference.qa`."""
    num_threads: int = 1
    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.05
    dicom_series: dict | None = None
    """DICOM series → channel regexes (serve.dicom_series); None = names and SeriesDescription words."""


@serve.ingress()
class VoxrayModel:
    """A replica serving one registry model over HTTP."""

    def __init__(self, config: dict) -> None:
        cfg = ReplicaConfig(**config)
        torch.set_num_threads(max(1, cfg.num_threads))
        device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
        predictor = Predictor.from_registry(cfg.model_path, device=device, overlap=cfg.overlap,
                                              qa=cfg.qa, backend=cfg.backend)
        self.service = ModelService(predictor, Limits(**cfg.limits), cfg.key_digests, infer=self.infer,
                                    series_rule=cfg.dicom_series)
        self.public_docs = cfg.public_docs
        self.infer_batch.set_max_batch_size(cfg.max_batch_size)
        self.infer_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.batch_sizes: list[int] = []
        log.info("replica ready: %s v%s on %s", predictor.card.get("name"), predictor.card.get("version"), device)

    def __serve_build_asgi_app__(self) -> Any:
        return build_app(self.service, public_docs=self.public_docs)

    def stats(self) -> dict[str, Any]:
        """Recent batch sizes and this replica's memory (tests and benchmarks check batching and bounded RSS)."""
        import os
        import resource

        sizes = self.batch_sizes
        with open("/proc/self/statm") as fh:
            rss_pages = int(fh.read().split()[1])
        return {"batches": len(sizes), "max_batch": max(sizes, default=0),
                "mean_batch": sum(sizes) / max(len(sizes), 1), "pid": os.getpid(),
                "rss_mb": rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    async def infer(self, request: Request) -> Inferred:
        return await self.infer_batch(request)

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def infer_batch(self, requests: list[Request]) -> list[Inferred]:
        """Logits for every request in the batch from shared forward passes (requests of one shape and TTA setting
        share them), computed off the event loop."""
        self.batch_sizes = (self.batch_sizes + [len(requests)])[-1000:]
        return await asyncio.to_thread(self.service.predictor.run, requests)


def build_deployment(cfg: ReplicaConfig, *, min_replicas: int = 1, max_replicas: int = 1,
                     target_ongoing_requests: float = 2.0, max_ongoing_requests: int | None = None,
                     num_cpus: float = 1.0, name: str = "voxray-model", drain_timeout_s: float = 120.0) -> Any:
    """A bound Serve application for `cfg` with autoscaling and per-replica resources; a stopping replica finishes
    the requests it holds for up to `drain_timeout_s` (checked every 0.5 s) before Ray kills it."""
    ongoing = max_ongoing_requests or 2 * cfg.max_batch_size
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if cfg.use_gpu:
        actor["num_gpus"] = 1
    if min_replicas == max_replicas:
        scaling: dict[str, Any] = {"num_replicas": min_replicas}
    else:
        scaling = {"autoscaling_config": {"min_replicas": min_replicas, "max_replicas": max_replicas,
                                          "target_ongoing_requests": target_ongoing_requests}}
    dep = serve.deployment(VoxrayModel, name=name, max_ongoing_requests=ongoing, ray_actor_options=actor,
                           health_check_period_s=10, graceful_shutdown_timeout_s=drain_timeout_s,
                           graceful_shutdown_wait_loop_s=0.5, **scaling)
    return dep.bind(asdict(cfg))

"""The `serve` section: a registry model behind Ray Serve + FastAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from voxray.platform.paths import is_loopback_host
from voxray.platform.specs.common import ArtifactPath, StrictModel


class AutoscalingSpec(StrictModel):
    min_replicas: int = Field(default=1, ge=0)
    """Fewest replicas."""
    max_replicas: int = Field(default=1, ge=1)
    """Most replicas."""
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    """Ongoing requests per replica that autoscaling aims for."""

    @model_validator(mode="after")
    def _ordered(self) -> "AutoscalingSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class LimitsSpec(StrictModel):
    max_upload_mb: float = Field(default=512, gt=0)
    """Largest request body, enforced while streaming (413 past it)."""
    max_voxels: int = Field(default=256**3, ge=1)
    """Largest decoded volume in voxels per channel (413 past it; also stops gzip bombs)."""
    max_dim: int = Field(default=1024, ge=1)
    """Largest size of any one image axis."""
    max_inflight_mb: float = Field(default=2048, gt=0)
    """Estimated peak memory (uploads, inflated NIfTI, float32 copies, logits) all requests of one replica may hold
    at once; a request that does not fit gets 503 + Retry-After, one that alone exceeds it 413. Size it to the
    replica's memory minus the model's."""

    @model_validator(mode="after")
    def _upload_fits(self) -> "LimitsSpec":
        if self.max_upload_mb > self.max_inflight_mb:
            raise ValueError(f"max_upload_mb {self.max_upload_mb} exceeds max_inflight_mb {self.max_inflight_mb}: "
                             "an upload at the limit could never be admitted")
        return self


class ServeSpec(StrictModel):
    model: ArtifactPath
    """Registry entry: <registry>/<name> (latest version) or <registry>/<name>/<version>."""
    host: str = "127.0.0.1"
    """Bind address (loopback by default; 0.0.0.0 exposes the API to the network)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """HTTP port."""
    route_prefix: str = "/"
    """URL prefix of the API."""
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    max_batch_size: int = Field(default=4, ge=1)
    """Requests batched into one forward pass (@serve.batch)."""
    batch_wait_timeout_s: float = Field(default=0.05, ge=0)
    """How long a batch waits to fill."""
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    """Per-replica concurrency; null = 2 × max_batch_size (Ray's default of 5 would cap batches)."""
    drain_timeout_s: float = Field(default=120.0, gt=0)
    """Seconds a stopping replica (shutdown, redeploy, scale-down) keeps serving the requests it holds before it is
    killed (Ray's default is 20 s). Size it to a full queue: max_ongoing_requests × one request's time (a BraTS-size
    volume takes ~10 s on one CPU)."""
    num_cpus: float = Field(default=1.0, gt=0)
    """CPUs reserved per replica; also the replica's torch thread count (rounded up)."""
    use_gpu: bool = False
    """One GPU per replica (bf16 autocast)."""
    sw_overlap: float | None = Field(default=None, ge=0, lt=1)
    """Sliding-window overlap at inference; null = the model card's `inference.overlap` (0.25 unless trained with
    another). Window, batch and TTA default to the card too; a request may choose TTA (`?tta=`)."""
    qa: Literal["warn", "refuse", "off"] | None = None
    """Input QA against the model's training fingerprint: warn (findings in the `qa` block / `X-Voxray-QA`
    header), refuse (HTTP 422 naming the findings), off; null = the model card's `inference.qa` (warn)."""
    backend: Literal["torch", "onnxruntime"] | None = None
    """Network runtime of every replica: torch, or onnxruntime (CPU; needs `voxray export --onnx` of the model, or
    of each ensemble member, and is refused with `use_gpu`); null = the model card's `inference.backend`."""
    api_key_env: str | None = "VOXRAY_API_KEY"
    """Env var holding the bearer API key (several comma-separated keys allow rotation); null = no key, which
    needs `allow_anonymous: true` and a loopback host."""
    allow_anonymous: bool = False
    """Serve without an API key (with `api_key_env: null`); refused unless `host` is loopback, and always refused
    by the RayService builder, whose bind address is not in the spec."""
    public_docs: bool = False
    """`/docs` and `/openapi.json` answer without the key (by default they need it, like every route except
    `/healthz` and a detail-free `/readyz`)."""
    dicom_series: dict[str, str] | None = None
    """DICOM uploads: which series feeds which channel, as {channel: regex searched in "SeriesDescription
    ProtocolName"}, e.g. {flair: "(?i)flair", t1gd: "(?i)t1.*(gd|post|\\+c)"}; null = a multipart field or zip
    folder named after the channel, else the channel names (and aliases) as words of the SeriesDescription. A
    one-channel model takes the one series."""
    limits: LimitsSpec = LimitsSpec()
    blocking: bool = True
    """`voxray run` waits (Ctrl-C stops serving); false returns once the app is up (pipelines, demos)."""

    @field_validator("dicom_series")
    @classmethod
    def _regexes(cls, rule: dict[str, str] | None) -> dict[str, str] | None:
        import re

        for channel, pattern in (rule or {}).items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"dicom_series.{channel}: {pattern!r} is not a valid regex ({exc})") from None
        return rule

    @model_validator(mode="after")
    def _auth_explicit(self) -> "ServeSpec":
        if self.backend == "onnxruntime" and self.use_gpu:
            raise ValueError("backend onnxruntime runs on the CPU: set use_gpu: false, or backend: torch")
        if self.api_key_env is None and not self.allow_anonymous:
            raise ValueError("api_key_env is null but allow_anonymous is false: name an env var holding the API key, "
                             "or set allow_anonymous: true (loopback host only)")
        if self.allow_anonymous and self.api_key_env is not None:
            raise ValueError(f"allow_anonymous: true with api_key_env {self.api_key_env!r}: set api_key_env: null to "
                             "serve without a key, or drop allow_anonymous")
        if self.allow_anonymous and not is_loopback_host(self.host):
            raise ValueError(f"allow_anonymous: true needs a loopback host (127.0.0.1, ::1, localhost), not "
                             f"{self.host!r}: anyone who can reach it could use the model without a key")
        return self

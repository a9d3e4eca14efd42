"""The serving core without Ray: uploaded bytes → checked images → Predictor → mask in the input geometry.

The FastAPI routes (app.py) talk only to this object; the Ray Serve deployment builds one per replica and plugs in
its `@serve.batch` inference. CPU-heavy steps run in worker threads so one replica's event loop keeps accepting
(and rejecting) requests while a batch computes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np
import torch

from voxray.serving.admission import MemoryBudget, decode_cost
from voxray.serving.auth import authorized
from voxray.serving.validation import Limits, UploadError, decode_nifti
from voxray.training.channels import ChannelMismatch, canonical
from voxray.training.predict import InvalidInput, Predictor, mask_image, volume_from_images

log = logging.getLogger(__name__)

InferFn = Callable[[torch.Tensor], Awaitable[torch.Tensor]]


class ModelService:
    """One loaded model plus the request policy (limits, API key digests; None = anonymous)."""

    def __init__(self, predictor: Predictor, limits: Limits, key_digests: Sequence[str] | None = None,
                 infer: InferFn | None = None) -> None:
        if isinstance(key_digests, str):
            raise TypeError("key_digests is a sequence of digests, not one string")
        self.predictor = predictor
        self.limits = limits
        self.key_digests = tuple(key_digests) if key_digests is not None else None
        self.budget = MemoryBudget(limits.max_inflight_bytes)
        self._infer = infer or self._infer_unbatched

    @property
    def card(self) -> dict:
        return self.predictor.card

    def authorized(self, header: str | None) -> bool:
        return authorized(header, self.key_digests)

    def model_info(self) -> dict[str, Any]:
        """Public facts from the model card (GET /v1/model)."""
        c = self.card
        return {k: c.get(k) for k in ("name", "version", "created", "channels", "labels", "label_encoding",
                                      "regions", "task", "spatial_dims", "patch", "metrics")} | {
            "architecture": (c.get("model") or {}).get("name")}

    def request_cost(self, files: Mapping[str, bytes]) -> int:
        """Estimated peak bytes of serving `files`, from their headers (see admission.decode_cost)."""
        return decode_cost(files, self.limits, int(self.card.get("out_channels") or 1))

    def is_single_image(self, names: list[str]) -> bool:
        """One upload that does not name a channel (or a one-channel model) is a 4D (or 3D) image."""
        if len(names) != 1:
            return False
        wanted = {canonical(c) for c in self.predictor.channels}
        return len(wanted) == 1 or canonical(names[0]) not in wanted

    def decode(self, files: Mapping[str, bytes]) -> tuple[Any, Any]:
        """(Volume, reference image for the output geometry); every problem is an UploadError."""
        if not files:
            raise UploadError(422, f"no images uploaded; send one file per channel {self.predictor.channels} "
                                   "(multipart field = channel name) or one 4D NIfTI")
        if len(files) > self.limits.max_channels:
            raise UploadError(413, f"{len(files)} files exceed the limit of {self.limits.max_channels}")
        images = {name: decode_nifti(data, self.limits, name) for name, data in files.items()}
        try:
            if self.is_single_image(list(images)):
                like = next(iter(images.values()))
                return volume_from_images(like, self.predictor.channels), like
            return volume_from_images(images, self.predictor.channels), next(iter(images.values()))
        except (ChannelMismatch, InvalidInput) as exc:
            raise UploadError(422, str(exc)) from None

    async def segment(self, files: Mapping[str, bytes]) -> tuple[np.ndarray, Any]:
        """Mask (I, J, K) uint8 in the uploaded grid, and the image whose geometry it shares."""
        volume, like = await asyncio.to_thread(self.decode, files)
        try:
            prepared = await asyncio.to_thread(self.predictor.prepare, volume)
        except (ChannelMismatch, InvalidInput) as exc:
            raise UploadError(422, str(exc)) from None
        logits = await self._infer(prepared.image)
        mask = await asyncio.to_thread(self.predictor.finish, logits, prepared.record)
        return mask, like

    async def _infer_unbatched(self, image: torch.Tensor) -> torch.Tensor:
        return (await asyncio.to_thread(self.predictor.infer, [image]))[0]

    @staticmethod
    def mask_bytes(mask: np.ndarray, like: Any) -> bytes:
        """The mask as gzipped NIfTI bytes with the input's affine and header geometry."""
        import gzip

        return gzip.compress(mask_image(mask, like).to_bytes(), compresslevel=1, mtime=0)  # deterministic bytes

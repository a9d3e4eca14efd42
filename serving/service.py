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

from voxray.serving.admission import MemoryBudget, decode_cost
from voxray.serving.auth import authorized
from voxray.serving.dicom_in import decode_dicom, dicom_cost, is_dicom_upload
from voxray.serving.validation import Limits, UploadError, decode_nifti
from voxray.training.channels import ChannelMismatch, canonical
from voxray.training.predict import (OUTPUTS, Inferred, InvalidInput, Prediction, Predictor, Request, output_images,
                                     volume_from_images)
from voxray.training.predict_settings import InvalidSettings

log = logging.getLogger(__name__)

InferFn = Callable[[Request], Awaitable[Inferred]]


class ModelService:
    """One loaded model plus the request policy (limits, API key digests; None = anonymous)."""

    def __init__(self, predictor: Predictor, limits: Limits, key_digests: Sequence[str] | None = None,
                 infer: InferFn | None = None, series_rule: Mapping[str, str] | None = None) -> None:
        if isinstance(key_digests, str):
            raise TypeError("key_digests is a sequence of digests, not one string")
        self.predictor = predictor
        self.limits = limits
        self.key_digests = tuple(key_digests) if key_digests is not None else None
        self.budget = MemoryBudget(limits.max_inflight_bytes)
        self.series_rule = dict(series_rule) if series_rule else None
        """DICOM series → channel: {channel: regex over SeriesDescription/ProtocolName} (serving/dicom_in.py)."""
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
                                      "regions", "task", "spatial_dims", "patch", "metrics", "inference")} | {
            "architecture": (c.get("model") or {}).get("name"), "qa_policy": self.predictor.settings.qa,
            "backend": self.predictor.settings.backend,
            "ensemble": [f"{m['name']}/{m['version']}" for m in (c.get("ensemble") or {}).get("members") or []] or None}

    def request_cost(self, files: Mapping[str, bytes], outputs: Sequence[str] = ("mask",),
                     mirror: Sequence[int] = ()) -> int:
        """Estimated peak bytes of serving `files`, from their headers (see admission.decode_cost): logits, plus the
        TTA mean/variance channels, probabilities and uncertainty maps when asked for, count as output channels; an
        ensemble holds every member's logits (and variance) until they are combined."""
        k = int(self.card.get("out_channels") or 1)
        channels = k * (2 if mirror and "uncertainty" in outputs else 1) * len(self.predictor.models)
        channels += 2 * k * ("probabilities" in outputs) + 2 * ("uncertainty" in outputs)
        if is_dicom_upload(files):
            return dicom_cost(files, self.limits, channels, len(self.predictor.channels))
        return decode_cost(files, self.limits, channels)

    def options(self, outputs: str, tta: str | None) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """(outputs, mirror axes) from the query strings `outputs=mask,uncertainty` and `tta=none|mirror|0,2`."""
        from voxray.platform.specs.inference import parse_tta

        wanted = tuple(dict.fromkeys(o.strip() for o in outputs.split(",") if o.strip())) or ("mask",)
        unknown = [o for o in wanted if o not in OUTPUTS]
        if unknown:
            raise UploadError(422, f"unknown outputs {unknown}; choose from {', '.join(OUTPUTS)}")
        try:
            return wanted, self.predictor.mirror(None if tta is None else parse_tta(tta))
        except (ValueError, InvalidSettings) as exc:
            raise UploadError(422, f"tta: {exc}") from None

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
        if is_dicom_upload(files):
            try:
                return decode_dicom(files, self.predictor.channels, self.limits, self.series_rule)
            except (ChannelMismatch, InvalidInput) as exc:
                raise UploadError(422, str(exc)) from None
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

    async def segment(self, files: Mapping[str, bytes], outputs: Sequence[str] = ("mask",),
                      mirror: Sequence[int] | None = None) -> tuple[Prediction, Any]:
        """The prediction (mask (I, J, K) uint8 in the uploaded grid, uncertainty score, requested maps) and the
        image whose geometry it shares; `mirror` = TTA axes (None: the model card's default)."""
        volume, like = await asyncio.to_thread(self.decode, files)
        try:
            prepared = await asyncio.to_thread(self.predictor.prepare, volume)
        except (ChannelMismatch, InvalidInput) as exc:
            raise UploadError(422, str(exc)) from None
        request = Request(prepared.image, None if mirror is None else tuple(mirror), "uncertainty" in outputs)
        inferred = await self._infer(request)
        prediction = await asyncio.to_thread(self.predictor.outputs, inferred, prepared, outputs)
        return prediction, like

    async def _infer_unbatched(self, request: Request) -> Inferred:
        return (await asyncio.to_thread(self.predictor.run, [request]))[0]

    @staticmethod
    def nifti_bytes(img: Any) -> bytes:
        """A NIfTI image as gzipped bytes (deterministic: no timestamp)."""
        import gzip

        return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)

    @classmethod
    def mask_bytes(cls, mask: np.ndarray, like: Any) -> bytes:
        """The mask as gzipped NIfTI bytes with the input's affine, header geometry and exact shape."""
        from voxray.training.predict import mask_image

        return cls.nifti_bytes(mask_image(mask, like))

    @classmethod
    def zip_bytes(cls, prediction: Prediction, like: Any, summary: Mapping[str, Any]) -> bytes:
        """mask / probabilities / uncertainty .nii.gz (those computed) and summary.json in one zip."""
        import io
        import json
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # members are gzipped already
            for name, img in output_images(prediction, like).items():
                zf.writestr(f"{name}.nii.gz", cls.nifti_bytes(img))
            zf.writestr("summary.json", json.dumps(summary, indent=2))
        return buf.getvalue()

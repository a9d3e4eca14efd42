"""FastAPI routes: ordinary handlers over a `ModelService` (no Ray here, so they run under TestClient too).

POST /v1/predict  multipart, one NIfTI per channel (field = channel name, aliases allowed) or one 4D NIfTI
                  (any field name, or a raw application/octet-stream body) → mask .nii.gz, or JSON with
                  `?format=json` (per-class volume in ml, lesion counts).
GET  /v1/model    card facts;  GET /healthz  liveness;  GET /readyz  model loaded;  GET /docs  OpenAPI UI.

The API key is checked first, before the body is read; the body is read through a size-bounded stream.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from voxray.serving.service import ModelService
from voxray.serving.stats import mask_summary
from voxray.serving.validation import UploadError, bounded_stream, check_content_length

log = logging.getLogger(__name__)

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "binary"},
                "description": "One .nii/.nii.gz per channel, field name = channel (see GET /v1/model), "
                               "or a single 4D NIfTI under any field name."}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {"200": {"content": {"application/gzip": {}, "application/json": {}},
                          "description": "mask .nii.gz in the input geometry, or JSON stats with ?format=json"}},
}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=_UNAUTHORIZED if status == 401 else None)


async def read_files(request: Request, service: ModelService) -> dict[str, bytes]:
    """Uploaded files by field name, read through a stream that stops at the upload limit."""
    limits = service.limits
    check_content_length(request.headers.get("content-length"), limits)
    stream = bounded_stream(request.stream(), limits)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, stream, max_files=limits.max_channels, max_fields=4,
                                 max_part_size=64 * 1024)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise UploadError(400, f"bad multipart body: {exc}") from None
        files: dict[str, bytes] = {}
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if name in files:
                        raise UploadError(422, f"field {name!r} appears more than once")
                    files[name] = await value.read()
        finally:
            await form.close()
        return files
    if ctype.startswith("application/octet-stream") or ctype.startswith("application/gzip"):
        return {"image": b"".join([chunk async for chunk in stream])}
    raise UploadError(415, f"unsupported content type {ctype or '(none)'!r}; send multipart/form-data "
                           "(one file per channel) or application/octet-stream (one 4D NIfTI)")


def build_app(service: ModelService) -> FastAPI:
    """The HTTP API for one model service."""
    app = FastAPI(title="voxray segmentation", version="1",
                  description=f"Segmentation with registry model {service.card.get('name')!r} "
                              f"v{service.card.get('version')}. Authorization: Bearer <API key>.")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the replica's event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Response:
        """Readiness: the model is loaded (it is, once the replica has started)."""
        return JSONResponse({"status": "ready", "model": service.card.get("name"),
                             "version": service.card.get("version")})

    @app.get("/v1/model")
    async def model(request: Request) -> Response:
        """Name, version, channels, labels and metrics of the served model."""
        if not service.authorized(request.headers.get("authorization")):
            return _error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        return JSONResponse(service.model_info())

    @app.post("/v1/predict", openapi_extra=_UPLOAD_DOC)
    async def predict(request: Request, format: Literal["nifti", "json"] = Query("nifti")) -> Response:
        """Segment the uploaded volume; the mask comes back on the input's grid (shape and affine)."""
        if not service.authorized(request.headers.get("authorization")):
            return _error(401, "missing or wrong API key (Authorization: Bearer <key>)")
        try:
            files = await read_files(request, service)
            mask, like = await service.segment(files)
        except UploadError as exc:
            log.info("refused request: %s %s", exc.status, exc)
            return _error(exc.status, str(exc))
        if format == "json":
            return JSONResponse(mask_summary(mask, like.affine, service.card) | {
                "model": service.card.get("name"), "version": service.card.get("version")})
        body = await asyncio.to_thread(service.mask_bytes, mask, like)
        return Response(body, media_type="application/gzip",
                        headers={"Content-Disposition": 'attachment; filename="mask.nii.gz"'})

    return app


__all__ = ["build_app", "read_files"]


"""FastAPI routes: ordinary handlers over a `ModelService` (no Ray here, so they run under TestClient too).

POST /v1/predict  multipart, one NIfTI per channel (field = channel name, aliases allowed) or one 4D NIfTI
                  (any field name, or a raw application/octet-stream body) → mask .nii.gz, or JSON with
                  `?format=json` (per-class volume in ml, lesion counts, uncertainty score);
                  `?outputs=mask,probabilities,uncertainty` (or `?format=zip`) → a zip of those NIfTI + summary.json;
                  `?tta=none|mirror|0,2` overrides the card's mirror test-time augmentation.
GET  /v1/model    card facts;  GET /healthz  liveness;  GET /readyz  model loaded;  GET /docs  OpenAPI UI.
GET  /viewer/     the browser viewer (serving/page.py; `/` redirects there): the page loads without a key, its API
                  calls send it.

Auth (see docs/serving.md): an ASGI middleware checks the bearer key before routing, so nothing — query validation,
body reading, a 404 — happens for a request without it. Open without a key: `/healthz` and `/readyz` (which then
names no model), plus `/docs` and `/openapi.json` only when the spec sets `public_docs`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

from voxray.serving.admission import RETRY_AFTER_S, upload_bytes
from voxray.serving.contract import (DOCS_ASSET_PATHS, add_docs, add_error_handlers, add_openapi, error,
                                     error_responses)
from voxray.serving.dicom_in import dicom_part_name, is_dicom
from voxray.serving.dicom_seg import DICOM_MEDIA, check_seg_request, seg_bytes, wants_dicom
from voxray.serving.page import PAGE_PATHS, add_viewer
from voxray.serving.service import ModelService
from voxray.serving.stats import mask_summary
from voxray.serving.validation import UploadError, bounded_stream, check_content_length
from voxray.training.qa import header_value

log = logging.getLogger(__name__)

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
_NO_KEY = "missing or wrong API key (Authorization: Bearer <key>)"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
_UPLOAD_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "binary"},
                "description": "One .nii/.nii.gz per channel, field name = channel (see GET /v1/model), "
                               "or a single 4D NIfTI under any field name; or DICOM: .dcm parts (a field per "
                               "series, repeated per slice) or one zip of series (docs/serving.md, DICOM)."}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/zip": {"schema": {"type": "string", "format": "binary"},
                                "description": "A zip of DICOM series, one per channel."},
        },
    },
    "responses": {"200": {"content": {"application/gzip": {}, "application/zip": {}, "application/json": {},
                                      "application/dicom": {}},
                          "description": "mask .nii.gz in the input geometry; a zip with ?outputs=… beyond the "
                                         "mask; JSON stats (volumes, lesions, uncertainty score) with ?format=json; "
                                         "a DICOM-SEG for DICOM input with Accept: application/dicom"}},
}


def _error(status: int, detail: str) -> JSONResponse:
    headers = _UNAUTHORIZED if status == 401 else {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    return error(status, detail, headers)


class BearerAuth:
    """ASGI middleware: every HTTP request outside `open_paths` needs a valid key, checked before routing."""

    def __init__(self, app: ASGIApp, service: ModelService, open_paths: frozenset[str]) -> None:
        self.app = app
        self.service = service
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _route_path(scope) not in self.open_paths:
            if not self.service.authorized(Headers(scope=scope).get("authorization")):
                await _error(401, _NO_KEY)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve's route_prefix arrives as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


async def read_files(request: Request, service: ModelService) -> dict[str, bytes]:
    """Uploaded files by field name, read through a stream that stops at the upload limit."""
    limits = service.limits
    check_content_length(request.headers.get("content-length"), limits)
    stream = bounded_stream(request.stream(), limits)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        parser = MultiPartParser(request.headers, stream, max_files=limits.max_files, max_fields=4,
                                 max_part_size=64 * 1024)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise UploadError(400, f"bad multipart body: {exc}") from None
        files: dict[str, bytes] = {}
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    data = await value.read()
                    if is_dicom(data):  # a field per series, repeated per slice: keyed <field>/<file name>
                        name = dicom_part_name(name, value.filename, files)
                    elif name in files:
                        raise UploadError(422, f"field {name!r} appears more than once")
                    files[name] = data
        finally:
            await form.close()
        return files
    if ctype.startswith(("application/octet-stream", "application/gzip", "application/zip")):  # zip: DICOM
        return {"image": b"".join([chunk async for chunk in stream])}
    raise UploadError(415, f"unsupported content type {ctype or '(none)'!r}; send multipart/form-data "
                           "(one file per channel) or application/octet-stream (one 4D NIfTI)")


def build_app(service: ModelService, *, public_docs: bool = False) -> FastAPI:
    """The HTTP API for one model service; `public_docs` opens /docs and /openapi.json to callers without a key."""
    app = FastAPI(title="voxray segmentation", version="1",
                  description="Segmentation with a voxray registry model (GET /v1/model names it). "
                              "Authorization: Bearer <API key> on every route but /healthz and /readyz.",
                  docs_url=None, redoc_url=None)  # /docs from local files (contract.add_docs); no ReDoc (CDN only)
    app.add_middleware(BearerAuth, service=service, open_paths=OPEN_PATHS | PAGE_PATHS | DOCS_ASSET_PATHS | (
        DOC_PATHS if public_docs else frozenset()))
    add_error_handlers(app)
    add_openapi(app, OPEN_PATHS)
    add_docs(app)
    add_viewer(app)

    @app.get("/healthz", responses=error_responses(500))
    async def healthz() -> dict[str, str]:
        """Liveness: the replica's event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses=error_responses(500))
    async def readyz(request: Request) -> Response:
        """Readiness: the model is loaded (it is, once the replica has started); names it only to key holders."""
        body = {"status": "ready"}
        if service.key_digests is None or service.authorized(request.headers.get("authorization")):
            body |= {"model": service.card.get("name"), "version": service.card.get("version")}
        return JSONResponse(body)

    @app.get("/v1/model", responses=error_responses(401, 500))
    async def model() -> Response:
        """Name, version, channels, labels and metrics of the served model."""
        return JSONResponse(service.model_info())

    @app.post("/v1/predict", openapi_extra=_UPLOAD_DOC,
              responses=error_responses(400, 401, 413, 415, 422, 500, 503))
    async def predict(request: Request, format: Literal["nifti", "json", "zip"] = Query("nifti"),
                      outputs: str = Query("mask", description="Comma-separated: mask, probabilities, uncertainty; "
                                                               "more than the mask → a zip"),
                      tta: str | None = Query(None, description="none, mirror or axes such as 0,2 (default: the "
                                                                "model card's)")) -> Response:
        """Segment the uploaded volume; the mask comes back on the input's grid (shape and affine)."""
        held = service.budget.hold()  # memory admission: reserve before reading, then before decoding
        try:
            wanted, mirror = service.options(outputs, tta)
            length = request.headers.get("content-length")
            check_content_length(length, service.limits)
            held.resize(upload_bytes(length, service.limits), "the upload")
            files = await read_files(request, service)
            dicom_out = wants_dicom(request.headers.get("accept")) and format == "nifti"
            if dicom_out:
                check_seg_request(files, wanted)
            held.resize(await asyncio.to_thread(service.request_cost, files, wanted, mirror))
            prediction, like = await service.segment(files, wanted, mirror)
            summary = mask_summary(prediction.mask, like.affine, service.card) | {
                "uncertainty": prediction.uncertainty, "qa": prediction.qa, "model": service.card.get("name"),
                "version": service.card.get("version")}
            if format == "json":
                return JSONResponse(summary)
            zipped = format == "zip" or wanted != ("mask",)
            if dicom_out:
                body = await asyncio.to_thread(seg_bytes, prediction.mask, like, service.card)
            elif not zipped:
                body = await asyncio.to_thread(service.mask_bytes, prediction.mask, like)
            else:
                body = await asyncio.to_thread(service.zip_bytes, prediction, like, summary)
        except UploadError as exc:
            log.info("refused request: %s %s", exc.status, exc)
            return _error(exc.status, str(exc))
        finally:
            held.release()
        headers = {"X-Voxray-Uncertainty": str(prediction.uncertainty["score"]),
                   "X-Voxray-TTA-Members": str(prediction.uncertainty["tta_members"])}
        if prediction.qa is not None:
            headers["X-Voxray-QA"] = header_value(prediction.qa)
        if dicom_out:
            return Response(body, media_type=DICOM_MEDIA,
                            headers=headers | {"Content-Disposition": 'attachment; filename="seg.dcm"'})
        if not zipped:
            return Response(body, media_type="application/gzip",
                            headers=headers | {"Content-Disposition": 'attachment; filename="mask.nii.gz"'})
        return Response(body, media_type="application/zip",
                        headers=headers | {"Content-Disposition": 'attachment; filename="prediction.zip"'})

    return app


__all__ = ["BearerAuth", "build_app", "read_files"]


"""The API contract a client can rely on: one error body (`ErrorBody`) for every refusal, 500s included; each
route's error statuses in the OpenAPI document with that schema; a bearer `securitySchemes` entry (the Authorize
button in /docs); and /docs served with Swagger UI's files from the `swagger-ui-bundle-v2` package, so the page
works on a network with no internet (FastAPI's default loads them from a CDN and shows a blank page offline).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

SCHEME = "bearerAuth"
DOCS_STATIC = "/docs/static/"
DOCS_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css", "favicon-32x32.png": "image/png"}
DOCS_ASSET_PATHS = frozenset(DOCS_STATIC + name for name in DOCS_FILES)
"""Swagger UI's own files: answer without the key (nothing secret), so a public /docs page can load them."""
INTERNAL = "internal server error; the server log has the details"


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx this app sends: one human-readable reason."""

    model_config = ConfigDict(extra="forbid")
    detail: str = Field(description="Why the request was refused, naming the field or file at fault.")


_WHY = {
    400: "Malformed request: bad Content-Length or multipart body, not a NIfTI, corrupt or truncated gzip/NIfTI, "
         "vox_offset out of range, corrupt header.",
    401: "Missing or wrong API key (`Authorization: Bearer <key>`); checked before anything else.",
    413: "Too large: upload over max_upload_mb, an axis over max_dim, too many voxels or channels, a gzip bomb, "
         "or a request whose memory estimate alone exceeds the replica's budget.",
    415: "Content-Type other than multipart/form-data, application/octet-stream or application/gzip.",
    422: "Unusable input: bad query parameter, channels that do not match the model, images on different grids, "
         "a volume smaller than the model's minimum extent, NaN/Inf voxels, an unsupported datatype.",
    500: "A server fault (never bad input); the body does not carry internals.",
    503: "Replica busy: this request's memory estimate does not fit next to those in flight; retry after "
         "`Retry-After` seconds.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` for `statuses`, each with the `ErrorBody` schema (503 also documents Retry-After)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        doc: dict[str, Any] = {"model": ErrorBody, "description": _WHY[status]}
        if status == 401:
            doc["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "`Bearer`"}}
        if status == 503:
            doc["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}}
        out[status] = doc
    return out


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(detail=detail).model_dump(), status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's error list as one line: `query.format: Input should be 'nifti', 'json' or 'zip' (got 'xml')`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()))
        got = f" (got {err['input']!r})" if isinstance(err.get("input"), (str, int, float)) else ""
        parts.append(f"{where}: {err.get('msg', 'invalid')}{got}")
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """Every error the framework raises (validation, 404/405, an unexpected exception) answers with `ErrorBody`."""

    async def on_validation(_: Request, exc: RequestValidationError) -> Response:
        return error(422, _validation_detail(exc))

    async def on_http(_: Request, exc: StarletteHTTPException) -> Response:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, INTERNAL)

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_crash)


def add_openapi(app: FastAPI, open_routes: frozenset[str]) -> None:
    """The OpenAPI document with the bearer scheme: required on every route but `open_routes` (key optional)."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            doc.setdefault("components", {}).setdefault("securitySchemes", {})[SCHEME] = {
                "type": "http", "scheme": "bearer", "description": "an API key from the server's operator"}
            doc["security"] = [{SCHEME: []}]
            for path in open_routes & set(doc.get("paths", {})):
                for operation in doc["paths"][path].values():
                    operation["security"] = [{}, {SCHEME: []}]  # anonymous allowed, the key adds details
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def add_docs(app: FastAPI) -> None:
    """GET /docs (Swagger UI from the package's files, no CDN) and its OAuth2 redirect page and static files."""
    from swagger_ui_bundle import swagger_ui_path

    folder = swagger_ui_path

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> Response:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=f"{base}/openapi.json", title=f"{app.title} — API",
            swagger_js_url=f"{base}{DOCS_STATIC}swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_STATIC}swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_STATIC}favicon-32x32.png",
            oauth2_redirect_url=f"{base}/docs/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": False, "validatorUrl": None})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(DOCS_STATIC + "{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in DOCS_FILES:
            return error(404, f"no docs file {name!r}")
        return FileResponse(str(folder / name), media_type=DOCS_FILES[name],
                            headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"})


__all__ = ["DOCS_ASSET_PATHS", "ErrorBody", "add_docs", "add_error_handlers", "add_openapi", "error",
           "error_responses"]

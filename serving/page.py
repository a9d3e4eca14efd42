"""The browser viewer (serving/static/): a page of the app's own at `/viewer/` (`/` redirects there).

The page, its script and style files answer without the API key (they hold nothing secret); every API call the page
makes sends the key the user types in, in the Authorization header only. The files are read once from the
package (they ship in the wheel as package data) and served with a strict Content-Security-Policy: scripts,
styles and connections to this origin only, no inline code, no framing.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

ASSETS = {
    "viewer.html": "text/html; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "upload.js": "text/javascript; charset=utf-8",
    "views.js": "text/javascript; charset=utf-8",
    "nifti.js": "text/javascript; charset=utf-8",
    "unzip.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
}
PREFIX = "/viewer/"
PAGE_PATHS = frozenset({"/", "/viewer", PREFIX} | {PREFIX + name for name in ASSETS})
"""Paths that answer without the key (exact matches: nothing below /viewer/ but these files)."""
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache", "X-Frame-Options": "DENY"}


def load_assets() -> dict[str, bytes]:
    """Every viewer file's bytes; a missing one (a wheel built without its package data) fails here, at startup."""
    folder = Path(__file__).with_name("static")
    return {name: (folder / name).read_bytes() for name in ASSETS}


def _mount_root(request: Request) -> str:
    """The app's mount point as the client sees it (Serve's route_prefix arrives as root_path)."""
    return request.scope.get("root_path", "").rstrip("/")


def add_viewer(app: FastAPI) -> None:
    """Routes for the viewer page and its files on `app` (outside the OpenAPI schema)."""
    assets = load_assets()

    def asset(name: str) -> Response:
        return Response(assets[name], media_type=ASSETS[name], headers=HEADERS)

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        return RedirectResponse(_mount_root(request) + PREFIX, status_code=307)

    @app.get("/viewer", include_in_schema=False)
    async def viewer_redirect(request: Request) -> Response:
        return RedirectResponse(_mount_root(request) + PREFIX, status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    async def viewer() -> Response:
        return asset("viewer.html")

    @app.get(PREFIX + "{name}", include_in_schema=False)
    async def viewer_file(name: str) -> Response:
        if name not in ASSETS:
            return Response(status_code=404)
        return asset(name)


__all__ = ["ASSETS", "PAGE_PATHS", "add_viewer", "load_assets"]

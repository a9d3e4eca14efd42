"""The viewer's routes without a browser: the page and its files load without a key (and nothing else does), a
strict CSP, redirects that respect a mount prefix, no network dependency, one palette shared with the PNG overlays."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from voxray.preprocessing.overlay import PALETTE
from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.page import ASSETS, PAGE_PATHS, load_assets
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor

KEY = "viewer-routes-key"


@pytest.fixture(scope="module")
def app(tiny_model):
    return build_app(ModelService(Predictor.from_registry(tiny_model), Limits(), [key_digest(KEY)]))


def test_page_and_files_open_without_key(app):
    with TestClient(app) as c:
        page = c.get("/viewer/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert '<script type="module" src="viewer.js"></script>' in page.text
        for name, media in ASSETS.items():
            r = c.get(f"/viewer/{name}")
            assert r.status_code == 200 and r.headers["content-type"] == media, name
        assert c.get("/viewer/nope.js").status_code == 401  # only the listed files are open
        assert c.get("/viewer/nope.js", headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
        assert c.get("/v1/model").status_code == 401 and c.post("/v1/predict").status_code == 401
        assert c.get("/viewer/../v1/model").status_code == 401


def test_redirects_to_the_page_under_a_mount_prefix(app):
    with TestClient(app) as c:
        for path in ("/", "/viewer"):
            r = c.get(path, follow_redirects=False)
            assert r.status_code == 307 and r.headers["location"] == "/viewer/"
    with TestClient(app, root_path="/seg") as c:
        r = c.get("/seg/", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/seg/viewer/"


def test_open_paths_are_exact():
    assert "/viewer/" in PAGE_PATHS and "/viewer/viewer.js" in PAGE_PATHS
    assert all(p in ("/", "/viewer") or p.startswith("/viewer/") for p in PAGE_PATHS)
    assert not any(p.startswith("/v1") for p in PAGE_PATHS)


def test_assets_need_no_network_and_no_inline_code():
    assets = load_assets()
    for name, body in assets.items():
        text = body.decode()
        assert not re.search(r"https?://", text), f"{name} refers to the network"
        assert "eval(" not in text and "new Function" not in text, name
    html = assets["viewer.html"].decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script (the CSP forbids it)"
    assert " style=" not in html and "<style" not in html, "inline style (the CSP forbids it)"
    assert not re.search(r"<[^>]+\son[a-z]+=", html), "inline event handler (the CSP forbids it)"
    imports = {m for body in assets.values() for m in re.findall(r'from "\./([\w.]+)"', body.decode())}
    assert imports <= set(ASSETS), imports - set(ASSETS)


def test_viewer_palette_matches_overlay_palette():
    js = load_assets()["views.js"].decode()
    block = js[js.index("export const PALETTE"):js.index("];", js.index("export const PALETTE"))]
    colours = [tuple(int(v) for v in m) for m in re.findall(r"\[(\d+), (\d+), (\d+)\]", block)]
    assert colours == list(PALETTE)

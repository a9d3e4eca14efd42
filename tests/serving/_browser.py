"""Browser-test helpers (imported by name, `from _browser import …`): the system Chromium driven by Playwright, an
in-process uvicorn server for a FastAPI app, canvas pixels as numpy, screenshots kept as test artefacts.

Playwright never downloads a browser here: it drives Debian's `chromium` (`.ci/run` installs it) through
`executable_path`. Tests skip only when no Chromium binary can be found.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from voxray.preprocessing.overlay import PALETTE

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    """$VOXRAY_CHROMIUM, else Debian's /usr/bin/chromium, else a chromium/chrome on PATH."""
    env = os.environ.get("VOXRAY_CHROMIUM")
    if env:
        return env if Path(env).is_file() else None
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (fresh profile) under Playwright; skips the test when no Chromium is installed."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        pytest.skip("no Chromium found ($VOXRAY_CHROMIUM, /usr/bin/chromium, chromium/chrome on PATH): "
                    "`apt-get install -y chromium` (.ci/run installs it)")
    with tempfile.TemporaryDirectory(prefix="voxray-chromium-") as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=exe, args=FLAGS, headless=True,
                                                        viewport={"width": 1500, "height": 900},
                                                        accept_downloads=True)
        try:
            yield context
        finally:
            context.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app) -> Iterator[str]:
    """`app` under uvicorn on a loopback port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_js(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until truthy. (Playwright's wait_for_function evaluates its predicate with eval inside
    the page, which the viewer's Content-Security-Policy rightly refuses; page.evaluate goes through the debugger.)"""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
        page.wait_for_timeout(50)


def csp_violations(page) -> list[str]:
    """Console errors the page's Content-Security-Policy raised, collected from now on."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None)
    return seen


def canvas_pixels(page, selector: str) -> np.ndarray:
    """RGBA pixels (H, W, 4) of a canvas, read in the page."""
    w, h, b64 = page.evaluate("""(sel) => {
        const c = document.querySelector(sel);
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = '';
        for (let i = 0; i < d.length; i += 8192) s += String.fromCharCode(...d.subarray(i, i + 8192));
        return [c.width, c.height, btoa(s)];
    }""", selector)
    return np.frombuffer(base64.b64decode(b64), np.uint8).reshape(h, w, 4)


def classify(rgba: np.ndarray) -> np.ndarray:
    """Class index per pixel where the pixel is exactly (±1) a palette colour, else 0."""
    out = np.zeros(rgba.shape[:2], np.uint8)
    for k, colour in enumerate(PALETTE, start=1):
        out[(np.abs(rgba[..., :3].astype(int) - colour) <= 1).all(-1)] = k
    return out


def voxel_samples(pixels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The canvas sampled at the centre of each of `shape` (rows, cols) voxels drawn over its whole area."""
    h, w = pixels.shape[:2]
    rows = ((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int)
    cols = ((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int)
    return pixels[np.ix_(rows, cols)]


def artefact_dir(tmp_path_factory) -> Path:
    """Where screenshots go: $VOXRAY_TEST_ARTEFACTS/viewer, else a pytest temp folder (printed in the report)."""
    base = os.environ.get("VOXRAY_TEST_ARTEFACTS")
    out = Path(base) / "viewer" if base else tmp_path_factory.mktemp("viewer-artefacts")
    out.mkdir(parents=True, exist_ok=True)
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()

"""The viewer page in headless Chromium against the app under uvicorn (no Ray): its NIfTI parser, RAS mapping and
zip reader against nibabel/zipfile, the key flow, every refusal's message, drag and drop, results and downloads.
The trained-model, Ray Serve run with pixel checks is test_viewer_e2e.py."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile

import httpx
import nibabel as nib
import numpy as np
import pytest

from voxray.preprocessing.overlay import ras_volume
from voxray.serving.app import build_app
from voxray.serving.auth import key_digest
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.predict import Predictor

from _browser import b64, canvas_pixels, chromium, csp_violations, live_server, wait_js
from conftest import CHANNELS, nii_bytes

pytestmark = pytest.mark.slow

KEY = "viewer-page-key-0123"
LIMIT = 200_000


@pytest.fixture(scope="module")
def server(tiny_model):
    service = ModelService(Predictor.from_registry(tiny_model), Limits(max_upload_bytes=LIMIT), [key_digest(KEY)])
    with live_server(build_app(service)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as context:
        yield context


@pytest.fixture()
def page(browser, server):
    page = browser.new_page()
    page.requests = []
    page.errors = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.csp = csp_violations(page)
    page.goto(server + "/")
    assert page.url == server + "/viewer/"
    yield page
    assert not page.errors, page.errors
    assert not page.csp, page.csp  # the page runs under its own Content-Security-Policy
    assert not any(KEY in u for u in page.requests), "the key went into a URL"
    page.close()


def _connect(page, key=KEY):
    page.fill("#api-key", key)
    page.click("#connect")
    if key == KEY:
        page.wait_for_selector("#upload-form:not([hidden])")


_READ = """async (b64) => {
    const m = await import('./nifti.js');
    const n = await m.readNifti(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const f = new Uint8Array(Float32Array.from(n.data, Number).buffer);
    let s = '';
    for (let i = 0; i < f.length; i += 8192) s += String.fromCharCode(...f.subarray(i, i + 8192));
    return {dims: n.dims, frames: n.frames, affine: n.affine, data: btoa(s), version: n.version};
}"""


_TRY = """async (b64) => {
    const m = await import('./nifti.js');
    return m.readNifti(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))).then(() => 'parsed', (e) => e.message);
}"""


def _variants() -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """name → (file bytes, the values nibabel reads (I, J, K[, T]), nibabel's affine)."""
    rng = np.random.default_rng(1)
    oblique = np.array([[0.0, 0, -2, 10], [1.5, 0, 0, -3], [0, 1, 0, 4], [0, 0, 0, 1]])
    out = {}

    def add(name, img, gz=True):
        raw = img.to_bytes()
        back = type(img).from_bytes(raw)
        out[name] = (gzip.compress(raw) if gz else raw, np.asarray(back.dataobj, np.float32), back.affine)

    add("float32 sform", nib.Nifti1Image(rng.normal(size=(5, 6, 7)).astype(np.float32), np.diag([1.2, 1, 1.5, 1])))
    scaled = nib.Nifti1Image(rng.integers(-300, 300, (4, 5, 6)).astype(np.int16), oblique)
    scaled.header.set_slope_inter(2.0, -5.0)
    add("int16 scaled", scaled)
    add("uint8 4D raw", nib.Nifti1Image(rng.integers(0, 255, (4, 3, 5, 3)).astype(np.uint8), np.eye(4)), gz=False)
    big = nib.Nifti1Image(rng.normal(size=(3, 4, 5)), np.diag([-1.0, -1, 1, 1]),
                          header=nib.Nifti1Header(endianness=">"))
    big.set_data_dtype(np.float64)
    add("float64 big-endian", big)
    q = nib.Nifti2Image(rng.integers(-9, 9, (4, 4, 3)).astype(np.int32), oblique)
    q.set_sform(None, code=0)
    q.set_qform(oblique, code=1)
    add("nifti2 int32 qform", q)
    for dtype in (np.uint16, np.int8, np.uint32, np.int64):
        add(f"{np.dtype(dtype).name}", nib.Nifti1Image(rng.integers(0, 100, (3, 3, 2)).astype(dtype), np.eye(4),
                                                       dtype=dtype))
    bare = nib.Nifti1Image(rng.normal(size=(3, 4, 2)).astype(np.float32), None)
    bare.header.set_zooms((2.0, 3.0, 4.0))
    bare.set_qform(None, code=0)
    bare.set_sform(None, code=0)
    add("no orientation", bare)
    return out


def test_nifti_parser_matches_nibabel(page):
    for name, (data, values, affine) in _variants().items():
        got = page.evaluate(_READ, b64(data))
        frames = values.shape[3] if values.ndim == 4 else 1
        assert got["dims"] == list(values.shape[:3]) and got["frames"] == frames, name
        arr = np.frombuffer(base64.b64decode(got["data"]), np.float32)
        assert np.allclose(arr, values.reshape(-1, order="F"), rtol=1e-6), name
        assert np.allclose(got["affine"], affine[:3], atol=1e-4), (name, got["affine"], affine)
    refusals = {
        b"GIF89a" * 100: "not a NIfTI",
        gzip.compress(b"x" * 400): "not a NIfTI",
        b"\x1f\x8b\x08\x00garbage": "gzip",
        nib.Nifti1Pair(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.binaryblock + b"\0" * 8: ".hdr/.img pair",
        nii_bytes(nib.Nifti1Image(np.zeros((4, 4), np.float32), np.eye(4)), gz=False): "expected a 3D image",
        nii_bytes(nib.Nifti1Image(np.zeros((3, 3, 3), np.complex64), np.eye(4)), gz=False): "unsupported NIfTI",
        nii_bytes(nib.Nifti1Image(np.zeros((30, 30, 30), np.float32), np.eye(4)), gz=False)[:2000]: "truncated",
    }
    for data, reason in refusals.items():
        message = page.evaluate(_TRY, b64(data))
        assert reason in message, (reason, message)


def test_ras_mapping_matches_nibabel(page):
    data = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    rot = np.deg2rad(20)
    affines = {
        "RAS": np.eye(4), "LPS": np.diag([-1.0, -1, 1, 1]), "LAS": np.diag([-2.0, 1, 3, 1]),
        "SRA": np.array([[0.0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]),
        "PIL": np.array([[0.0, 0, -1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]]),
        "oblique": np.array([[np.cos(rot), -np.sin(rot), 0, 0], [np.sin(rot), np.cos(rot), 0, 0], [0, 0, 1, 0],
                             [0, 0, 0, 1]]) @ np.diag([1.0, 2, 1, 1]),
    }
    for name, affine in affines.items():
        got = page.evaluate("""async ([b64, dims, affine]) => {
            const m = await import('./nifti.js');
            const src = new Float32Array(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)).buffer);
            const g = m.rasGrid(dims, affine);
            const [nx, ny, nz] = g.shape;
            const out = [];
            for (let z = 0; z < nz; z++) for (let y = 0; y < ny; y++) for (let x = 0; x < nx; x++) {
                out.push(src[g.index(x, y, z)]);
            }
            return {shape: g.shape, spacing: g.spacing, out, voxel: g.voxel(nx - 1, 0, 0)};
        }""", [b64(data.tobytes(order="F")), list(data.shape), affine[:3].tolist()])
        expected = ras_volume(data, affine)
        assert got["shape"] == list(expected.shape), name
        assert np.array_equal(np.asarray(got["out"]).reshape(expected.shape, order="F"), expected), name
        ijk = got["voxel"]  # the file voxel the RAS corner (right, posterior, inferior) comes from
        assert data[tuple(ijk)] == expected[-1, 0, 0], name


def test_unzip_reads_stored_and_deflated_members(page):
    rng = np.random.default_rng(0)
    members = {"stored.bin": rng.bytes(3000), "deflated.json": json.dumps({"a": list(range(500))}).encode()}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("stored.bin"), members["stored.bin"], compress_type=zipfile.ZIP_STORED)
        zf.writestr(zipfile.ZipInfo("deflated.json"), members["deflated.json"], compress_type=zipfile.ZIP_DEFLATED)
    got = page.evaluate("""async (b64) => {
        const m = await import('./unzip.js');
        const files = await m.unzip(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
        const enc = (u) => { let s = ''; for (const c of u) s += String.fromCharCode(c); return btoa(s); };
        return Object.fromEntries(Object.entries(files).map(([k, v]) => [k, enc(v)]));
    }""", b64(buf.getvalue()))
    assert {k: base64.b64decode(v) for k, v in got.items()} == members
    assert "not a zip" in page.evaluate("""async () => (await import('./unzip.js')).unzip(new Uint8Array(50))
        .then(() => 'ok', (e) => e.message)""")


def test_wrong_key_then_right_key(page):
    _connect(page, "not-the-key")
    page.wait_for_selector("#error:not([hidden])")
    assert "API key was refused" in page.text_content("#error")
    assert page.is_hidden("#upload-form")
    _connect(page)
    assert page.is_hidden("#error") and "tiny v1" in page.text_content("#model-name")
    labels = page.eval_on_selector_all("#channel-inputs label", "ls => ls.map((l) => l.textContent)")
    assert labels == CHANNELS
    assert page.evaluate("sessionStorage.getItem('voxray.apiKey')") == KEY
    assert page.evaluate("localStorage.length") == 0 and page.evaluate("document.cookie") == ""


def _drop(page, files: dict[str, bytes]) -> None:
    dt = page.evaluate_handle("""(files) => {
        const dt = new DataTransfer();
        for (const [name, b64] of files) {
            dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name));
        }
        return dt;
    }""", [[name, b64(data)] for name, data in files.items()])
    page.dispatch_event("#drop-zone", "drop", {"dataTransfer": dt})


def test_drop_segment_results_and_downloads(page, server, images, tmp_path):
    _connect(page)
    files = {f"case_{c}.nii.gz": nii_bytes(images[c]) for c in reversed(CHANNELS)}  # dropped in the wrong order
    _drop(page, files)
    wait_js(page, "!document.getElementById('segment').disabled")
    # Segment is enabled once every channel is picked; the study is parsed for display after that (async)
    wait_js(page, "document.getElementById('status').textContent.startsWith('Study loaded')")
    for c in CHANNELS:  # matched by name, not by order
        assert page.evaluate(f"document.getElementById('file-{c}').files[0].name") == f"case_{c}.nii.gz"
    assert "Study loaded (22 × 20 × 18" in page.text_content("#status")
    page.click("#segment")
    page.wait_for_selector("#results:not([hidden])", timeout=60_000)
    assert page.text_content("#status").startswith("Done") and page.is_hidden("#error")
    expected = httpx.post(server + "/v1/predict?format=json", headers={"Authorization": f"Bearer {KEY}"},
                          files=[(c, (f"{c}.nii.gz", nii_bytes(images[c]))) for c in CHANNELS]).json()
    rows = page.eval_on_selector_all("#volumes tbody tr", "rs => rs.map((r) => [...r.cells].map((c) => c.textContent))")
    assert rows == [[f" {n}" if n in ("edema", "tumour") else n, f"{c['volume_ml']:.2f}", str(c["voxels"]),
                     str(c["lesions"])] for n, c in expected["classes"].items()]
    assert "No QA warnings." in page.text_content("#warnings")
    assert f"{expected['uncertainty']['score']:.3f}" in page.text_content("#uncertainty-score")
    assert page.is_visible("#uncertainty-row")
    links = page.eval_on_selector_all("#downloads a", "as => as.map((a) => a.dataset.file)")
    assert links == ["mask.nii.gz", "uncertainty.nii.gz", "summary.json"]
    with page.expect_download() as dl:
        page.click("#downloads a[data-file='mask.nii.gz']")
    assert dl.value.suggested_filename == "case_flair_mask.nii.gz"
    dl.value.save_as(tmp_path / "mask.nii.gz")
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    served = httpx.post(server + "/v1/predict", headers={"Authorization": f"Bearer {KEY}"},
                        files=[(c, (f"{c}.nii.gz", nii_bytes(images[c]))) for c in CHANNELS])
    assert np.array_equal(np.asarray(mask.dataobj), np.asarray(nib.Nifti1Image.from_bytes(
        gzip.decompress(served.content)).dataobj))
    assert np.allclose(mask.affine, images["flair"].affine)
    page.check("#want-probabilities")  # class probabilities on request, as one more download
    page.click("#segment")
    wait_js(page, "document.querySelector('#downloads a[data-file=\"probabilities.nii.gz\"]')", timeout=60)
    links = page.eval_on_selector_all("#downloads a", "as => as.map((a) => a.dataset.file)")
    assert links == ["mask.nii.gz", "probabilities.nii.gz", "uncertainty.nii.gz", "summary.json"]


def _error_after_segment(page) -> str:
    page.click("#segment")
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    return page.text_content("#error")


def test_every_refusal_has_a_message(page, images, tmp_path):
    _connect(page)
    # 413 from the server: an incompressible 4D image over the upload limit
    noise = nib.Nifti1Image(np.random.default_rng(0).normal(size=(30, 30, 30, 2)).astype(np.float32), np.eye(4))
    (tmp_path / "big.nii.gz").write_bytes(nii_bytes(noise))
    page.set_input_files("#file-4d", str(tmp_path / "big.nii.gz"))
    wait_js(page, "!document.getElementById('segment').disabled")
    assert f"Too large for this server: upload of" in _error_after_segment(page)
    assert f"exceeds the limit of {LIMIT} bytes" in page.text_content("#error")
    # 422 from the server: channels on different grids (same shape, another affine)
    shifted = nib.Nifti1Image(np.asarray(images["t1gd"].dataobj), np.eye(4))
    for name, img in (("flair", images["flair"]), ("t1gd", shifted)):
        (tmp_path / f"{name}.nii.gz").write_bytes(nii_bytes(img))
        page.set_input_files(f"#file-{name}", str(tmp_path / f"{name}.nii.gz"))
    wait_js(page, "!document.getElementById('segment').disabled")
    assert "The server refused the input: modality 't1gd'" in _error_after_segment(page)
    # 503 with Retry-After, and a dropped connection, from a stand-in for the server
    page.route("**/v1/predict*", lambda r: r.fulfill(status=503, headers={"Retry-After": "2"},
                                                     content_type="application/json",
                                                     body='{"detail": "busy: 3 requests in flight"}'))
    assert _error_after_segment(page) == "The server is busy: busy: 3 requests in flight. Try again in 2 s."
    page.unroute("**/v1/predict*")
    page.route("**/v1/predict*", lambda r: r.abort())
    assert "Could not reach the server" in _error_after_segment(page)
    page.unroute("**/v1/predict*")
    # what the page says for the statuses the page itself cannot provoke
    said = page.evaluate("""async () => {
        const {explain} = await import('./api.js');
        return [400, 415, 500].map((s) => explain(s, 'why'));
    }""")
    assert said == ["The server could not read the upload: why", "Unsupported upload type: why",
                    "Server error 500: why"]
    # a file the page cannot read is refused before any upload
    (tmp_path / "notes.nii.gz").write_bytes(b"GIF89a" * 100)
    page.set_input_files("#file-4d", str(tmp_path / "notes.nii.gz"))
    page.wait_for_selector("#error:not([hidden])")
    assert "notes.nii.gz: cannot be read as NIfTI (not a NIfTI file" in page.text_content("#error")


def test_qa_warnings_from_the_summary_are_listed(page, images):
    """The server's summary may carry QA warnings (`qa.warnings`); the page lists each one."""
    mask = np.zeros(images["flair"].shape, np.uint8)
    mask[8:14, 7:12, 6:11] = 2
    summary = {"shape": list(mask.shape), "voxel_ml": 0.0018, "model": "tiny", "version": 1,
               "classes": {"edema": {"volume_ml": 0.0, "voxels": 0, "lesions": 0},
                           "tumour": {"volume_ml": 0.27, "voxels": int(mask.sum() / 2), "lesions": 1}},
               "qa": {"warnings": ["spacing 5.0 mm is outside the training range", {"message": "channels swapped?"}]}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("mask.nii.gz", nii_bytes(nib.Nifti1Image(mask, images["flair"].affine)))
        zf.writestr("summary.json", json.dumps(summary))
    page.route("**/v1/predict*", lambda r: r.fulfill(status=200, content_type="application/zip", body=buf.getvalue()))
    _connect(page)
    _drop(page, {f"{c}.nii.gz": nii_bytes(images[c]) for c in CHANNELS})
    wait_js(page, "!document.getElementById('segment').disabled")
    page.click("#segment")
    page.wait_for_selector("#results:not([hidden])")
    items = page.eval_on_selector_all("#warnings li", "ls => ls.map((l) => l.textContent)")
    assert items == ["spacing 5.0 mm is outside the training range", "channels swapped?"]
    assert page.is_hidden("#uncertainty-row")  # no uncertainty map came back: no toggle
    assert page.eval_on_selector_all("#downloads a", "as => as.map((a) => a.dataset.file)") == ["mask.nii.gz",
                                                                                               "summary.json"]


def test_crosshair_slices_window_and_channel(page, images):
    """Click sets the crosshair (RAS order on screen, file voxel in the readout), wheel and arrow keys move the
    slice, shift-drag changes the window, the channel selector switches the grey image."""
    _connect(page)
    _drop(page, {f"{c}.nii.gz": nii_bytes(images[c]) for c in CHANNELS})
    wait_js(page, "document.getElementById('status').textContent.startsWith('Study loaded')")
    state = "window.voxrayViewer.state"
    nx, ny, nz = page.evaluate(f"{state}.grid.shape")
    assert (nx, ny, nz) == (22, 20, 18)  # the affine's axes are R/A/S-aligned (x flipped): same shape
    box = page.eval_on_selector("#view-axial", "c => [c.width, c.height]")
    u, v = 3, 4  # radiological: column 3 from the left is x = nx - 1 - 3 (patient's right), row 4 is y = ny - 1 - 4
    page.click("#view-axial", position={"x": (u + 0.5) * box[0] / nx, "y": (v + 0.5) * box[1] / ny})
    z0 = nz // 2
    assert page.evaluate(f"{state}.cursor") == [nx - 1 - u, ny - 1 - v, z0]
    i = nx - 1 - (nx - 1 - u)  # the file's i axis runs toward the left (affine[0, 0] < 0)
    assert page.text_content("#cursor-info").startswith(f"voxel ({i}, {ny - 1 - v}, {z0})")
    page.hover("#view-axial")
    page.mouse.wheel(0, -120)
    wait_js(page, f"{state}.cursor[2] === {z0 + 1}")
    page.focus("#view-sagittal")
    page.keyboard.press("ArrowDown")
    assert page.evaluate(f"{state}.cursor[0]") == nx - 2 - u
    before = page.evaluate(f"{state}.window")
    r = page.eval_on_selector("#view-coronal", "c => c.getBoundingClientRect().toJSON()")
    page.keyboard.down("Shift")
    page.mouse.move(r["x"] + 20, r["y"] + 20)
    page.mouse.down()
    page.mouse.move(r["x"] + 120, r["y"] + 20, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    assert page.evaluate(f"{state}.window") > before
    grey = canvas_pixels(page, "#view-axial")
    page.select_option("#channel", "1")
    assert page.evaluate(f"{state}.channel") == 1 and (canvas_pixels(page, "#view-axial") != grey).any()
    level = page.evaluate(f"{state}.level")
    page.fill("#level", str(level + 50))
    assert page.evaluate(f"{state}.level") == pytest.approx(level + 50)

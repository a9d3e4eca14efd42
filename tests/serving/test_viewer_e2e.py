"""The viewer end to end: a small trained model served by Ray Serve (under a route prefix), headless Chromium opens
the page, a wrong key is refused on screen, the right key connects, a synthetic held-back MSD-BraTS case goes up as
one 4D NIfTI, and the mask's class colours are read back off the three canvases where the served mask (and
mostly the ground truth) says — in radiological and neurological order. Screenshots are kept as artefacts;
VOXRAY_UPDATE_SCREENSHOTS=1 also writes the README's docs/images/viewer.png."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from voxray.preprocessing.overlay import ras_volume
from voxray.training.predict import Predictor, predict_files

from _browser import (ROOT, artefact_dir, canvas_pixels, chromium, classify, csp_violations, free_port, voxel_samples,
                      wait_js)
from _viewer_model import LABELS, train_small_model

pytestmark = pytest.mark.slow

KEY_ENV = "VOXRAY_TEST_VIEWER_KEY"
KEY = "viewer-e2e-key-0123456789"
APP = "voxray-viewer-test"
PREFIX = "/voxray"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_small_model(tmp_path_factory.mktemp("viewer-model"))


@pytest.fixture(scope="module")
def served(ray_session, trained):
    from ray import serve

    from voxray.platform.specs.job import ServeJob
    from voxray.platform.specs.serve import ServeSpec
    from voxray.serving.runner import run_serve

    os.environ[KEY_ENV] = KEY
    spec = ServeSpec(model=str(trained[0].parent), port=free_port(), route_prefix=PREFIX, api_key_env=KEY_ENV,
                     num_cpus=0.5, blocking=False)
    result = run_serve(ServeJob(name=APP, serve=spec))
    assert result.ok, result.message
    try:
        yield result.summary
    finally:
        serve.shutdown()
        os.environ.pop(KEY_ENV, None)


def _views(mask_ras: np.ndarray, cursor: list[int], convention: str) -> dict[str, np.ndarray]:
    """What each canvas must show (rows top → bottom, columns left → right), from the RAS-ordered mask."""
    x, y, z = cursor
    flip_lr = convention == "radiological"
    axial = mask_ras[:, :, z].T[::-1]  # rows A → P, columns L → R
    coronal = mask_ras[:, y, :].T[::-1]  # rows S → I, columns L → R
    sagittal = mask_ras[x, ::-1, :].T[::-1]  # rows S → I, columns A → P
    return {"axial": axial[:, ::-1] if flip_lr else axial, "coronal": coronal[:, ::-1] if flip_lr else coronal,
            "sagittal": sagittal}


def _shown(page, plane: str, shape) -> np.ndarray:
    return classify(voxel_samples(canvas_pixels(page, f"#view-{plane}"), shape))


def _foreground_dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_viewer_end_to_end(served, trained, tmp_path_factory, tmp_path):
    version, image_path, label_path = trained
    out = artefact_dir(tmp_path_factory)
    url = served["url"]
    assert url.endswith(PREFIX) and served["viewer"] == f"{url}/viewer/"
    expected = np.asarray(predict_files(Predictor.from_registry(version), image_path).dataobj)
    affine = nib.load(str(image_path)).affine
    mask_ras = ras_volume(expected, affine)
    truth_ras = ras_volume(np.asarray(nib.load(str(label_path)).dataobj), affine)
    assert expected.any(), "the trained model found nothing: the test would prove little"

    with chromium() as browser:
        page = browser.new_page()
        urls, errors, statuses = [], [], []
        page.on("request", lambda r: urls.append(r.url))
        page.on("pageerror", lambda e: errors.append(str(e)))
        csp = csp_violations(page)
        page.goto(url + "/")
        assert page.url == f"{url}/viewer/"

        page.fill("#api-key", "a-wrong-key")
        page.click("#connect")
        page.wait_for_selector("#error:not([hidden])")
        assert "API key was refused" in page.text_content("#error")
        page.screenshot(path=str(out / "wrong_key.png"))

        page.fill("#api-key", KEY)
        page.click("#connect")
        page.wait_for_selector("#upload-form:not([hidden])")
        assert page.is_hidden("#error") and "viewer-e2e v1" in page.text_content("#model-name")
        page.set_input_files("#file-4d", str(image_path))
        wait_js(page, "!document.getElementById('segment').disabled")
        wait_js(page, "document.getElementById('status').textContent.startsWith('Study loaded')")
        page.evaluate("""() => {
            window.statusLog = [];
            new MutationObserver(() => window.statusLog.push(
                [document.getElementById('status').textContent, !document.getElementById('progress').hidden]))
                .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true});
        }""")
        page.click("#segment")
        page.wait_for_selector("#results:not([hidden])", timeout=180_000)
        statuses = page.evaluate("window.statusLog")
        assert any(text.startswith(("Uploading", "Segmenting")) and bar for text, bar in statuses), statuses
        assert page.text_content("#status").startswith("Done") and page.is_hidden("#error")
        page.screenshot(path=str(out / "viewer.png"))

        # the served mask, downloaded from the page, is the in-process prediction
        with page.expect_download() as dl:
            page.click("#downloads a[data-file='mask.nii.gz']")
        dl.value.save_as(tmp_path / "mask.nii.gz")
        assert np.array_equal(np.asarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj), expected)
        names = page.eval_on_selector_all("#downloads a", "as => as.map((a) => a.dataset.file)")
        assert names == ["mask.nii.gz", "uncertainty.nii.gz", "summary.json"]
        rows = page.eval_on_selector_all("#volumes tbody tr", "rs => rs.map((r) => r.dataset.class)")
        assert rows == [LABELS[k] for k in (1, 2, 3)]

        # pixels: opaque overlay, no crosshair; the page jumped to the axial slice with the most foreground
        page.fill("#opacity", "1")
        page.uncheck("#show-crosshair")
        cursor = page.evaluate("window.voxrayViewer.state.cursor")
        assert cursor[2] == int(np.argmax((mask_ras > 0).sum(axis=(0, 1))))
        for convention in ("radiological", "neurological"):
            page.select_option("#convention", convention)
            for plane, want in _views(mask_ras, cursor, convention).items():
                got = _shown(page, plane, want.shape)
                assert (got == want).mean() > 0.995, (convention, plane, (got != want).sum())
                for k in np.unique(want[want > 0]):
                    assert ((got == k) & (want == k)).sum() >= 0.95 * (want == k).sum(), (convention, plane, k)
            markers = page.evaluate("window.voxrayViewer.views.map((v) => v.markers())")
            left = "R" if convention == "radiological" else "L"
            assert [m["left"] for m in markers] == [left, left, "A"] and markers[0]["top"] == "A"
        axial_truth = _views(truth_ras, cursor, "neurological")["axial"]
        dice = _foreground_dice(_shown(page, "axial", axial_truth.shape), axial_truth)
        assert dice > 0.6, f"mask colours cover the labelled voxels with Dice {dice:.2f}"  # where the label is

        # legend: a hidden class disappears; the uncertainty overlay changes the picture
        page.select_option("#convention", "radiological")
        shape = _views(mask_ras, cursor, "radiological")["axial"].shape
        page.uncheck("#legend label[data-class='1'] input")
        assert not (_shown(page, "axial", shape) == 1).any()
        page.check("#legend label[data-class='1'] input")
        before = canvas_pixels(page, "#view-axial")
        assert page.is_visible("#uncertainty-row")
        page.check("#show-uncertainty")
        assert (canvas_pixels(page, "#view-axial") != before).any()
        page.screenshot(path=str(out / "uncertainty.png"))
        assert not errors and not csp, (errors, csp)
        assert not any(KEY in u for u in urls), "the key went into a URL"

    print(f"viewer screenshots: {out}")
    if os.environ.get("VOXRAY_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(out / "viewer.png", ROOT / "docs" / "images" / "viewer.png")

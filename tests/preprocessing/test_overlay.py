"""The one overlay renderer: RAS reorientation, radiological/neurological screen order, R/L/A/P markers, class
colours — and the three PNGs that use it (store preview, training overlays, the demo's prediction overlay)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from voxray.preprocessing.overlay import (PALETTE, axial_display, axial_markers, colour_mask,  # noqa: E402
                                          draw_markers, ras_volume, render_axial, stored_axial)

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
HALF = np.asarray(PALETTE[1]) * 0.5  # class 2 at the default alpha 0.5 over a black (constant) image


def _blob_right_anterior(shape=(20, 16, 12)) -> np.ndarray:
    """A RAS-ordered label with class 2 near the patient's right-anterior corner (high x, high y)."""
    lab = np.zeros(shape, np.uint8)
    lab[-5:-1, -5:-1, 4:8] = 2
    return lab


def _colour_fraction(png: Path, colour, half: str, panels: int = 1) -> float:
    """Share of the first panel's pixels of `colour` that lie in its left or right half."""
    img = (plt.imread(str(png))[..., :3] * 255).round().astype(int)
    img = img[:, : img.shape[1] // panels]
    hit = (np.abs(img - np.asarray(colour)) <= 2).all(-1)
    assert hit.sum() > 20, "the class colour does not appear"
    w = img.shape[1]
    return hit[:, : w // 2].sum() / hit.sum() if half == "left" else hit[:, w // 2:].sum() / hit.sum()


def test_axial_display_conventions():
    plane = np.zeros((4, 3))  # (x → R, y → A)
    plane[3, 2] = 1  # right-anterior corner
    radio, neuro = axial_display(plane), axial_display(plane, "neurological")
    assert radio.shape == (3, 4) and radio[0, 0] == 1  # top-left: anterior, patient's right on the screen's left
    assert neuro[0, 3] == 1
    assert axial_markers() == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert axial_markers("neurological")["left"] == "L"
    stored = np.zeros((3, 4))  # (y → A, x → R) as a store keeps an axial slice
    stored[2, 3] = 1
    assert stored_axial(stored)[0, 0] == 1


def test_ras_volume_undoes_the_file_orientation():
    ras = _blob_right_anterior()
    lps_file = ras[::-1, ::-1, :]  # the same head stored with an LPS affine
    assert np.array_equal(ras_volume(lps_file, LPS), ras)
    swapped = np.transpose(ras, (2, 0, 1))  # file axes (S, R, A)
    affine = np.zeros((4, 4))
    affine[0, 1] = affine[1, 2] = affine[2, 0] = affine[3, 3] = 1.0
    assert np.array_equal(ras_volume(swapped, affine), ras)


def test_colour_mask_and_markers():
    rgba = colour_mask(np.array([[0, 1], [2, 3]]), alpha=0.4)
    assert rgba[0, 0, 3] == 0 and np.allclose(rgba[1, 0, :3] * 255, PALETTE[1]) and rgba[1, 0, 3] == pytest.approx(0.4)
    bits = colour_mask(np.array([[3, 4]]), bitmask=True)  # highest set bit: 3 → class 2, 4 → class 3
    assert np.allclose(bits[0, 0, :3] * 255, PALETTE[1]) and np.allclose(bits[0, 1, :3] * 255, PALETTE[2])
    fig, ax = plt.subplots()
    draw_markers(ax)
    pos = {t.get_text(): t.get_position() for t in ax.texts}
    plt.close(fig)
    assert pos["R"][0] < 0.5 < pos["L"][0] and pos["A"][1] > 0.5 > pos["P"][1]


@pytest.mark.parametrize("convention, side", [("radiological", "left"), ("neurological", "right")])
def test_render_axial_puts_the_right_side_where_the_marker_says(tmp_path, convention, side):
    lab = _blob_right_anterior()
    image = np.ones(lab.shape, np.float32)
    out = render_axial(axial_display(image[..., 6], convention),
                       [(axial_display(lab[..., 6], convention), "x")], tmp_path / "o.png", convention=convention,
                       alpha=1.0)
    assert _colour_fraction(out, PALETTE[1], side) > 0.95


def test_demo_overlay_follows_the_affine(tmp_path):
    from voxray.platform.demo import overlay_png

    lab = _blob_right_anterior()
    image = np.ones(lab.shape, np.float32)
    flip = (slice(None, None, -1), slice(None, None, -1), slice(None))
    out = overlay_png(image[flip], lab[flip], lab[flip], tmp_path / "demo.png", LPS)  # an LPS file
    assert _colour_fraction(out, HALF, "left", panels=2) > 0.95  # patient's right still on the screen's left


class _Store:
    """The part of a Store that preview_png reads: (C, Z, Y, X) image and (Z, Y, X) label, RAS by construction."""

    channels = ("flair",)
    label_encoding = "index"

    def __init__(self) -> None:
        lab = _blob_right_anterior()  # (x, y, z)
        self.lab = np.ascontiguousarray(lab.transpose(2, 1, 0))  # → (z, y, x)
        self.img = np.ones((1, *self.lab.shape), np.float32)

    def image(self, case_id):
        return self.img

    def label(self, case_id):
        return self.lab


def test_store_preview_and_training_overlay_are_radiological(tmp_path):
    from voxray.preprocessing.store.preview import preview_png
    from voxray.training.tracking import save_overlay

    store = _Store()
    out = preview_png(store, "c", tmp_path / "p.png")
    assert _colour_fraction(out, HALF, "left") > 0.95
    neuro = preview_png(store, "c", tmp_path / "n.png", convention="neurological")
    assert _colour_fraction(neuro, HALF, "right") > 0.95
    z = 6
    save_overlay(store.img[0, z], store.lab[z], np.zeros_like(store.lab[z]), tmp_path / "t.png", "case")
    assert _colour_fraction(tmp_path / "t.png", HALF, "left", panels=2) > 0.95  # the ground-truth panel, left half

"""Separate-z resampling (nnU-Net's scheme for anisotropic grids): forward chain, record and the inverse."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from _pp_helpers import convert_loop, job, synth

from voxray.preprocessing.resample import Resampling, low_res_axis, resample_label
from voxray.preprocessing.transforms import TransformConfig, invert_label, invert_scores, preprocess_volume

SEPARATE = Resampling(scheme="separate_z")


@dataclass
class Vol:
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    channels: tuple = ("t1",)


def _ellipsoid_volume(shape_xyz: tuple[int, int, int], spacing_xyz: tuple[float, float, float], seed: int = 0) -> Vol:
    """A head-like ellipsoid (body) holding two nested blobs (labels 1, 2) on an axis-aligned grid, in mm."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape_xyz, spacing_xyz)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    half = [0.45 * n * s for n, s in zip(shape_xyz, spacing_xyz)]
    r = (x / half[0]) ** 2 + (y / half[1]) ** 2 + (z / half[2]) ** 2
    body = r < 1.0
    label = np.zeros(shape_xyz, np.uint8)
    label[r < 0.5] = 1
    label[((x - 3) ** 2 + y ** 2 + z ** 2) < 16] = 2
    image = np.where(body, 100.0 + 20.0 * label + rng.normal(0, 2, shape_xyz), 0.0).astype(np.float32)
    return Vol(image[None], label * body, np.diag([*spacing_xyz, 1.0]))


def _dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    x, y = a == value, b == value
    return 2 * float((x & y).sum()) / max(1, int(x.sum() + y.sum()))


def test_low_res_axis_follows_the_nnunet_rule():
    assert low_res_axis([5.0, 0.9, 0.9]) == 0
    assert low_res_axis([0.9, 0.9, 3.5]) == 2
    assert low_res_axis([0.9375, 1.5, 0.9375]) is None  # IBSR18: ratio 1.6, below 3
    assert low_res_axis([1.25, 1.25, 0.24]) is None  # two coarse axes: 3D, as nnU-Net
    assert low_res_axis([0.9375, 1.5, 0.9375], threshold=1.5) == 1


def test_default_config_keeps_its_json_form_and_hash():
    """Stores written before the field existed must not be rebuilt: the default leaves `to_dict` unchanged."""
    assert "resampling" not in TransformConfig().to_dict()
    cfg = TransformConfig(spacing=(1.0, 1.0, 1.0), resampling=SEPARATE)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["resampling"]["scheme"] == "separate_z"
    assert TransformConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="scheme"):
        Resampling(scheme="cubic")


def test_thick_slices_are_not_blended():
    """5 mm slices upsampled to 2.5 mm: order 0 across slices repeats each slice (linear would blend them)."""
    vol = _ellipsoid_volume((40, 40, 12), (0.9, 0.9, 5.0))
    target = (0.9, 0.9, 2.5)
    sep = preprocess_volume(vol, TransformConfig(spacing=target, normalize="none", resampling=SEPARATE))
    lin = preprocess_volume(vol, TransformConfig(spacing=target, normalize="none"))
    assert sep.record["resampling"]["scheme"] == "separate_z" and sep.record["resampling"]["axis"] == 0
    img = sep.image[0]
    assert img.shape[0] == 2 * sep.record["cropped_shape"][0]  # z doubled
    pairs = img[0::2] - img[1::2]
    assert np.abs(pairs).max() == 0.0
    assert np.abs(lin.image[0][0::2] - lin.image[0][1::2]).max() > 1.0


def test_in_plane_spline_beats_linear_on_a_smooth_signal():
    """Order 3 in plane reproduces a smooth quadratic ramp far better than linear interpolation."""
    shape = (24, 24, 6)
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ramp = 1.0 + 0.05 * (x - 12.0) ** 2 + 0.03 * (y - 10.0) ** 2
    image = np.repeat(ramp[..., None], shape[2], axis=2)[None].astype(np.float32)
    vol = Vol(image, None, np.diag([1.0, 1.0, 4.0, 1.0]))
    target = (1.0 / 3, 1.0 / 3, 4.0)
    cfg = dict(spacing=target, normalize="none", crop_nonzero=False)
    sep = preprocess_volume(vol, TransformConfig(resampling=SEPARATE, **cfg)).image[0]
    lin = preprocess_volume(vol, TransformConfig(**cfg)).image[0]
    n = sep.shape[1]
    c = (np.arange(n) + 0.5) / 3 - 0.5  # old coordinate of each new voxel (grid-aligned)
    truth = 1.0 + 0.05 * (c[None, :] - 12.0) ** 2 + 0.03 * (c[:, None] - 10.0) ** 2  # (Y, X) = (y, x)
    inner = (slice(12, -12), slice(12, -12))
    err_sep = np.abs(sep[2][inner] - truth[inner]).max()
    err_lin = np.abs(lin[2][inner] - truth[inner]).max()
    assert err_sep < err_lin / 5, (err_sep, err_lin)


def test_background_stays_zero_for_zscore_nonzero():
    """Cubic splines ring into the background; outside the resampled body mask the image must stay exactly 0."""
    vol = _ellipsoid_volume((40, 40, 12), (0.9, 0.9, 5.0))
    out = preprocess_volume(vol, TransformConfig(spacing=(0.6, 0.6, 2.5), resampling=SEPARATE))
    lin = preprocess_volume(vol, TransformConfig(spacing=(0.6, 0.6, 2.5)))
    ratio = (out.image[0] != 0).mean() / (lin.image[0] != 0).mean()
    assert 0.75 < ratio < 1.1, ratio  # about the body share (linear adds a one-voxel rim), not every voxel (1.5)
    assert (out.image[0][:, :3, :3] == 0).all()  # bounding-box corners lie outside the ellipsoid


@pytest.mark.parametrize("shape_xyz,spacing_xyz,target", [
    ((48, 32, 48), (0.9375, 1.5, 0.9375), (1.0, 1.0, 1.0)),  # IBSR18-like: below the anisotropy threshold
    ((40, 40, 14), (0.9, 0.9, 5.0), (0.9, 0.9, 2.0)),          # 5 mm slices: separate z
    ((40, 40, 14), (0.9, 0.9, 5.0), (1.3, 1.3, 5.0)),          # in-plane downsample, slices kept
])
def test_masks_return_to_the_input_grid(shape_xyz, spacing_xyz, target):
    vol = _ellipsoid_volume(shape_xyz, spacing_xyz)
    out = preprocess_volume(vol, TransformConfig(spacing=target, resampling=SEPARATE))
    json.dumps(out.record)
    expected_axis = low_res_axis(spacing_xyz[::-1]) if low_res_axis(spacing_xyz[::-1]) is not None \
        else low_res_axis(target[::-1])
    assert out.record["resampling"]["axis"] == expected_axis
    assert set(np.unique(out.label)) <= {0, 1, 2}
    back = invert_label(out.label, out.record)
    assert back.shape == vol.label.shape and back.dtype == np.uint8
    # label 2 is a 4 mm sphere: on 5 mm slices downsampled in plane it loses ~20 % (linear: the same)
    assert _dice(back, vol.label, 1) > 0.9 and _dice(back, vol.label, 2) > 0.7
    onehot = np.stack([out.label == v for v in range(3)]).astype(np.float32)
    scores = invert_scores(onehot, out.record)
    assert scores.shape == (3, *vol.label.shape)
    assert _dice(scores.argmax(0), vol.label, 1) > 0.85


def test_integer_in_plane_upsample_round_trips_exactly():
    """Per-class linear in plane at 2× lands every new voxel nearest one old voxel: the inverse is the identity."""
    vol = _ellipsoid_volume((30, 30, 10), (1.0, 1.0, 5.0))
    out = preprocess_volume(vol, TransformConfig(spacing=(0.5, 0.5, 5.0), resampling=SEPARATE))
    np.testing.assert_array_equal(invert_label(out.label, out.record), vol.label)


def test_per_class_label_resampling_keeps_thin_classes():
    lab = np.zeros((4, 20, 20), np.uint8)
    lab[:, 5:15, 5:15] = 1
    lab[:, 9:11, 9:11] = 2
    out = resample_label(lab, (4, 30, 30), axis=0)
    assert set(np.unique(out)) == {0, 1, 2}
    assert (out[:, 14:16, 14:16] == 2).all()


def test_store_records_the_scheme(tmp_path):
    """The store's per-case record carries the scheme, so predict/serve invert what preprocessing did."""
    root = synth(tmp_path / "ibsr", cases=1, layout="ibsr18", shape=(24, 16, 24))
    spec = job(root, str(tmp_path / "s.zarr"), dataset={"layout": "ibsr18", "root": str(root)},
               resampling={"scheme": "separate_z", "anisotropy_threshold": 1.5})
    rows, _, _ = convert_loop(spec)
    assert rows[0]["status"] == "ok", rows[0]
    from voxray.preprocessing.store.reader import Store

    store = Store.open(str(tmp_path / "s.zarr"))
    rec = store.case_attrs(rows[0]["case_id"])
    res = rec["record"]["resampling"]
    assert res["scheme"] == "separate_z" and res["axis"] == 1  # the 1.5 mm coronal axis (A → Y)
    assert store.attrs["transform"]["resampling"]["scheme"] == "separate_z"

"""The shared transform chain: geometry, normalisation and the exact inverse (pure numpy, no Ray)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from voxray.preprocessing.transforms import (TransformConfig, invert_label, invert_scores, nonzero_bbox,
                                             preprocess_volume)


@dataclass
class Vol:
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    channels: tuple = ("a", "b")


def _volume(shape=(20, 18, 14), affine=None, seed=0) -> Vol:
    rng = np.random.default_rng(seed)
    img = np.zeros((2, *shape), np.float32)
    img[:, 3:17, 2:15, 1:12] = rng.normal(100, 20, img[:, 3:17, 2:15, 1:12].shape)
    lab = np.zeros(shape, np.uint8)
    lab[6:12, 5:10, 4:9] = 1
    lab[8:10, 6:8, 5:7] = 3
    return Vol(img, lab, np.diag([1.2, 0.9, 2.0, 1.0]) if affine is None else affine)


AFFINES = {
    "ras": np.diag([1.0, 1.0, 1.0, 1.0]),
    "lps": np.array([[-0.9, 0, 0, 10], [0, -1.1, 0, 5], [0, 0, 2.0, -3], [0, 0, 0, 1]]),
    "pir": np.array([[0, 0, 1.5, 0], [-1.0, 0, 0, 0], [0, -0.8, 0, 0], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("spacing", [None, "half"])
def test_label_round_trip_is_exact(name, spacing):
    vol = _volume(affine=AFFINES[name])
    if spacing == "half":  # integer upsample: nearest forward + nearest back is the identity
        sp = np.sqrt((AFFINES[name][:3, :3] ** 2).sum(axis=0)) / 2
        cfg = TransformConfig(spacing=tuple(float(s) for s in sp))
    else:
        cfg = TransformConfig()
    out = preprocess_volume(vol, cfg)
    back = invert_label(out.label, out.record)
    assert back.dtype == np.uint8 and back.shape == vol.label.shape
    np.testing.assert_array_equal(back, vol.label)
    json.dumps(out.record)  # the record travels as JSON (zarr attrs, model cards)


def test_stored_affine_maps_voxels_to_the_same_world_point():
    vol = _volume(affine=AFFINES["pir"])
    out = preprocess_volume(vol, TransformConfig(normalize="none"))
    stored = np.asarray(out.record["affine"])
    orig = np.asarray(vol.affine)
    z, y, x = 4, 5, 6
    world = stored @ np.array([z, y, x, 1.0])
    ijk = np.linalg.solve(orig, world)
    i, j, k = np.round(ijk[:3]).astype(int)
    np.testing.assert_allclose(ijk[:3], [i, j, k], atol=1e-6)
    assert out.image[0, z, y, x] == vol.image[0, i, j, k]
    assert out.label[z, y, x] == vol.label[i, j, k]


def test_reorient_puts_axes_in_zyx_ras_order():
    vol = _volume(shape=(10, 12, 14), affine=np.diag([1.0, 2.0, 3.0, 1.0]))
    vol.image[:] = 1.0
    out = preprocess_volume(vol, TransformConfig(crop_nonzero=False, normalize="none"))
    assert out.image.shape == (2, 14, 12, 10)
    assert out.record["spacing"] == [3.0, 2.0, 1.0]
    assert out.record["orientation"] == "RAS"


def test_crop_to_nonzero_and_record():
    vol = _volume()
    out = preprocess_volume(vol, TransformConfig())
    # RAS already: (I,J,K) = (x,y,z); nonzero block x 3:17, y 2:15, z 1:12
    assert out.record["crop_bbox"] == [[1, 12], [2, 15], [3, 17]]
    assert out.image.shape == (2, 11, 13, 14)
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == [[0, 3], [0, 4], [0, 5]]


def test_resample_to_target_spacing_shapes():
    vol = _volume()  # spacing x 1.2, y 0.9, z 2.0
    out = preprocess_volume(vol, TransformConfig(spacing=(1.0, 1.0, 1.0)))
    cz, cy, cx = out.record["cropped_shape"]
    assert out.image.shape[1:] == (round(cz * 2.0), round(cy * 0.9), round(cx * 1.2))
    assert out.label.shape == out.image.shape[1:]
    assert set(np.unique(out.label)) <= {0, 1, 3}  # nearest keeps label values
    back = invert_label(out.label, out.record)
    assert back.shape == vol.label.shape
    assert (back == vol.label).mean() > 0.97


def test_invert_scores_linear_and_fill():
    vol = _volume()
    out = preprocess_volume(vol, TransformConfig(spacing=(0.6, 0.45, 1.0)))
    onehot = np.stack([out.label == 0, out.label == 1, out.label == 3]).astype(np.float32)
    back = invert_scores(onehot, out.record)
    assert back.shape == (3, *vol.label.shape) and back.dtype == np.float32
    recovered = np.array([0, 1, 3], np.uint8)[back.argmax(axis=0)]
    np.testing.assert_array_equal(recovered, vol.label)
    assert back[0, 0, 0, 0] == 1.0 and back[1, 0, 0, 0] == 0.0  # outside the crop = background
    with pytest.raises(ValueError, match="fill"):
        invert_scores(onehot, out.record, fill=[0.0])


@pytest.mark.parametrize("scheme", ["zscore_nonzero", "zscore", "ct_clip", "none"])
def test_normalisation(scheme):
    vol = _volume()
    cfg = TransformConfig(normalize=scheme, clip=(50.0, 150.0) if scheme == "ct_clip" else None, crop_nonzero=False)
    out = preprocess_volume(vol, cfg)
    img, raw = out.image, np.moveaxis(vol.image, 0, 0).transpose(0, 3, 2, 1)
    nz = raw[0] != 0
    if scheme == "zscore_nonzero":
        assert np.all(img[0][~nz] == 0)
        assert abs(img[0][nz].mean()) < 1e-3 and abs(img[0][nz].std() - 1) < 1e-3
    elif scheme == "zscore":
        assert abs(img[0].mean()) < 1e-3 and abs(img[0].std() - 1) < 1e-3
    elif scheme == "ct_clip":
        assert img.min() >= 0 and img.max() <= 1
    else:
        np.testing.assert_array_equal(img, raw)
    assert out.record["normalization"]["scheme"] == scheme
    assert len(out.record["normalization"]["stats"]) == 2


def test_bad_inputs_are_named():
    vol = _volume()
    vol.image[1, 5, 5, 5] = np.nan
    with pytest.raises(ValueError, match=r"NaN/Inf.*channels \[1\]"):
        preprocess_volume(vol, TransformConfig())
    vol = _volume()
    vol.label = vol.label[:-1]
    with pytest.raises(ValueError, match="label shape"):
        preprocess_volume(vol, TransformConfig())
    with pytest.raises(ValueError, match="normalize"):
        TransformConfig(normalize="minmax")
    with pytest.raises(ValueError, match="spatial shape"):
        out = preprocess_volume(_volume(), TransformConfig())
        invert_label(out.label[:-1], out.record)


def test_unlabelled_volume_and_config_round_trip():
    vol = _volume()
    vol.label = None
    cfg = TransformConfig(spacing=(1.0, 1.0, 1.0), normalize="ct_clip", clip=(0.0, 200.0))
    out = preprocess_volume(vol, cfg)
    assert out.label is None
    assert TransformConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert TransformConfig.from_dict({}) == TransformConfig()
    with pytest.raises(ValueError, match="unknown"):
        TransformConfig.from_dict({"spacng": [1, 1, 1]})

"""nnU-Net's CT normalisation (`ct_zscore`): clip to the dataset window, z-score with dataset foreground stats."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.preprocessing.normalize import normalize_channels
from voxray.preprocessing.transforms import TransformConfig


def test_clip_then_dataset_zscore():
    x = np.array([[-2000.0, -100.0, 40.0, 3000.0]], np.float32)
    out, rec = normalize_channels(x, "ct_zscore", clip=(-100.0, 200.0), ct_stats=(50.0, 25.0))
    np.testing.assert_allclose(out[0], [(-100 - 50) / 25, (-100 - 50) / 25, (40 - 50) / 25, (200 - 50) / 25])
    assert rec["stats"][0] == {"low": -100.0, "high": 200.0, "mean": 50.0, "std": 25.0}


def test_config_needs_stats_and_round_trips():
    with pytest.raises(ValueError, match="ct_stats"):
        TransformConfig(normalize="ct_zscore", clip=(-100.0, 200.0))
    cfg = TransformConfig(normalize="ct_zscore", clip=(-100.0, 200.0), ct_stats=(50.0, 25.0))
    assert TransformConfig.from_dict(cfg.to_dict()) == cfg
    assert "ct_stats" not in TransformConfig().to_dict()  # older stores keep their spec hash


def test_spec_field_reaches_the_transform():
    from voxray.platform.specs.loader import validate_job
    from voxray.platform.errors import SpecError

    pre = {"dataset": {"layout": "msd_brats", "root": "/x"}, "store": "/s.zarr", "normalize": "ct_zscore",
           "clip": [-100, 200], "ct_stats": [50, 25]}
    job = validate_job({"kind": "preprocess", "name": "ct", "preprocess": pre})
    assert TransformConfig.from_spec(job.preprocess).ct_stats == (50.0, 25.0)
    with pytest.raises(SpecError, match="ct_stats"):
        validate_job({"kind": "preprocess", "name": "ct", "preprocess": {**pre, "ct_stats": None}})

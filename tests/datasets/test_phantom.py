"""The realistic phantom: a per-voxel intensity classifier solves difficulty 0 but not the default, tissues overlap,
lesions are irregular, and every difficulty level is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from voxray.preprocessing.datasets import get_adapter
from voxray.preprocessing.synth import DEFAULT_DIFFICULTY, synth_dataset
from voxray.preprocessing.transforms import TransformConfig, preprocess_volume
from voxray.training import tasks
from voxray.training.baseline import fit_baseline
from voxray.training.metrics import label_map_dice

META = get_adapter("msd_brats").metadata()


def _cases(root, n):
    adapter = get_adapter("msd_brats")
    out = []
    for case in adapter.discover(root)[:n]:
        vol = adapter.load(case)
        pre = preprocess_volume(vol, TransformConfig())
        out.append((pre.image, pre.label))
    return out


def _baseline_mean_dice(tmp_path, level: int) -> float:
    train = _cases(synth_dataset("msd_brats", tmp_path / f"tr{level}", cases=6, seed=1, difficulty=level), 6)
    test = _cases(synth_dataset("msd_brats", tmp_path / f"te{level}", cases=3, seed=2, difficulty=level), 3)
    baseline = fit_baseline(train, "brats_regions", META)
    scores = []
    for image, label in test:
        pred = tasks.decode_logits(baseline(torch.from_numpy(image)[None])[0], "brats_regions", META)
        scores.append(label_map_dice(pred, label, "brats_regions", META)["mean"])
    return float(np.mean(scores))


def test_default_difficulty_defeats_a_per_voxel_classifier(tmp_path):
    easy, default = _baseline_mean_dice(tmp_path, 0), _baseline_mean_dice(tmp_path, DEFAULT_DIFFICULTY)
    assert easy > 0.78, f"difficulty 0 is the intensity-separable phantom of earlier versions ({easy:.3f})"
    assert default <= 0.65, f"a per-voxel intensity classifier reaches {default:.3f} mean Dice on the default phantom"


def test_tissue_intensities_overlap_and_shapes_are_irregular(tmp_path):
    root = synth_dataset("ibsr18", tmp_path / "ibsr", cases=1, seed=0)
    adapter = get_adapter("ibsr18")
    vol = adapter.load(adapter.discover(root)[0])
    t1, tissue = vol.image[0], vol.label
    lo = {c: np.percentile(t1[tissue == c], 2) for c in (1, 2, 3)}
    hi = {c: np.percentile(t1[tissue == c], 98) for c in (1, 2, 3)}
    assert hi[1] > lo[2] and hi[2] > lo[3], "CSF/GM and GM/WM intensity ranges must overlap"
    root = synth_dataset("msd_brats", tmp_path / "msd", cases=2, seed=3)
    for case in get_adapter("msd_brats").discover(root):
        label = get_adapter("msd_brats").load(case).label
        pts = np.argwhere(label > 0)
        assert ConvexHull(pts).volume > 1.3 * len(pts), "whole tumour is close to convex (a sphere/ellipsoid)"
    assert (root / "imagesTs").is_dir() and not list((root / "imagesTs").iterdir())


def test_levels_are_deterministic_and_validated(tmp_path):
    a = synth_dataset("msd_brats", tmp_path / "a", cases=1, seed=5, difficulty=3)
    b = synth_dataset("msd_brats", tmp_path / "b", cases=1, seed=5, difficulty=3)
    ca, cb = (get_adapter("msd_brats").load(get_adapter("msd_brats").discover(r)[0]) for r in (a, b))
    np.testing.assert_array_equal(ca.image, cb.image)
    with pytest.raises(ValueError, match="difficulty"):
        synth_dataset("msd_brats", tmp_path / "c", cases=1, difficulty=7)

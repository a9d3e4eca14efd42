"""MSD Task01 layout: synth → discover → load round trip, splits, and broken datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets import CaseError, get_adapter


def test_round_trip(synth_root):
    root = synth_root("msd_brats", cases=2, test_cases=1)
    adapter = get_adapter("msd_brats")
    cases = adapter.discover(root)
    assert [c.case_id for c in cases] == ["BRATS_001", "BRATS_002"]  # `._BRATS_001.nii.gz` is ignored
    vol = adapter.load(cases[0])
    assert vol.image.shape == (4, 48, 48, 40) and vol.image.dtype == np.float32
    assert vol.label.shape == (48, 48, 40) and vol.label.dtype == np.uint8
    assert set(np.unique(vol.label)) == {0, 1, 2, 3}
    assert vol.channels == ("flair", "t1w", "t1gd", "t2w")
    np.testing.assert_allclose(vol.affine, np.eye(4))
    # contrasts a model can learn on average (edema bright on FLAIR, enhancing bright on t1gd) that still overlap
    # normal tissue voxel by voxel (infiltration, bias field, look-alikes), so no threshold separates them
    brain = (vol.label == 0) & (vol.image[1] > 0)
    flair_edema, flair_brain = vol.image[0][vol.label == 1], vol.image[0][brain]
    t1gd_enh, t1gd_brain = vol.image[2][vol.label == 3], vol.image[2][brain]
    assert flair_edema.mean() > 1.3 * flair_brain.mean() and t1gd_enh.mean() > 1.05 * t1gd_brain.mean()
    assert np.percentile(flair_edema, 10) < np.percentile(flair_brain, 99)
    assert np.percentile(t1gd_enh, 10) < np.percentile(t1gd_brain, 99)
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 2
    assert (root / "imagesTs").is_dir()  # the real download has it, and nnU-Net's MSD converter needs it


def test_splits_and_metadata(synth_root):
    root = synth_root("msd_brats", cases=2, test_cases=1)
    test = get_adapter("msd_brats", split="test").discover(root)
    assert [(c.case_id, c.label) for c in test] == [("BRATS_003", None)]
    assert len(get_adapter("msd_brats", split="all").discover(root)) == 3
    vol = get_adapter("msd_brats", split="test").load(test[0])
    assert vol.label is None and vol.image.shape[0] == 4
    meta = get_adapter("msd_brats").metadata()
    assert meta["regions"] == {"ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}
    assert meta["labels"][1] == "edema" and meta["label_encoding"] == "index"


def test_deterministic_per_seed(tmp_path):
    from voxray.preprocessing.synth import synth_dataset

    a = synth_dataset("msd_brats", tmp_path / "a", cases=1, seed=3, shape=(24, 24, 20))
    b = synth_dataset("msd_brats", tmp_path / "b", cases=1, seed=3, shape=(24, 24, 20))
    c = synth_dataset("msd_brats", tmp_path / "c", cases=1, seed=4, shape=(24, 24, 20))
    ad = get_adapter("msd_brats")
    va, vb, vc = (ad.load(ad.discover(r)[0]) for r in (a, b, c))
    np.testing.assert_array_equal(va.image, vb.image)
    assert not np.array_equal(va.image, vc.image)


def test_wrong_root(tmp_path):
    with pytest.raises(DataError, match="no imagesTr/ under .*MSD"):
        get_adapter("msd_brats").discover(tmp_path)
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DataError, match="no cases found"):
        get_adapter("msd_brats").discover(tmp_path)


def test_missing_label_is_a_case_problem(broken_copy):
    root = broken_copy("msd_brats")
    (root / "labelsTr" / "BRATS_002.nii.gz").unlink()
    adapter = get_adapter("msd_brats")
    cases = {c.case_id: c for c in adapter.discover(root)}
    assert cases["BRATS_001"].ok
    assert "missing label" in cases["BRATS_002"].problems[0] and "BRATS_002.nii.gz" in cases["BRATS_002"].problems[0]
    with pytest.raises(CaseError, match="BRATS_002"):
        adapter.load(cases["BRATS_002"])


def test_truncated_nifti_names_the_file(broken_copy):
    root = broken_copy("msd_brats")
    path = root / "imagesTr" / "BRATS_001.nii.gz"
    path.write_bytes(path.read_bytes()[:2000])
    adapter = get_adapter("msd_brats")
    case = adapter.discover(root)[0]
    with pytest.raises(CaseError) as info:
        adapter.load(case)
    assert info.value.file == str(path) and "truncated" in info.value.reason
    assert "BRATS_001" in str(info.value)


def test_wrong_channel_count(broken_copy):
    import nibabel as nib

    root = broken_copy("msd_brats")
    path = root / "imagesTr" / "BRATS_001.nii.gz"
    img = nib.load(str(path))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :3], img.affine), str(path))
    adapter = get_adapter("msd_brats")
    with pytest.raises(CaseError, match="has 3 channels, expected 4"):
        adapter.load(adapter.discover(root)[0])


def test_case_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(CaseError("c1", "/x/y.nii.gz", "bad")))
    assert (err.case_id, err.file, err.reason) == ("c1", "/x/y.nii.gz", "bad")

"""BraTS 2023, ISLES 2022, IBSR18 and generic NIfTI pairs: round trips, grids, splits and broken datasets."""

from __future__ import annotations

import numpy as np
import pytest

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets import CaseError, get_adapter

PAIRS = dict(images={"T1": "*/t1.nii.gz", "T2": "*/t2.nii.gz"}, label="*/label.nii.gz")


def test_brats2023_round_trip_and_nesting(synth_root):
    root = synth_root("brats2023")
    adapter = get_adapter("brats2023")
    cases = adapter.discover(root)
    assert [c.case_id for c in cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    vol = adapter.load(cases[0])
    assert vol.image.shape == (4, 48, 48, 40) and vol.channels == ("t1n", "t1c", "t2w", "t2f")
    assert vol.affine[0, 0] == -1 and vol.affine[1, 1] == -1  # LPS-stored like the real files
    assert set(np.unique(vol.label)) == {0, 1, 2, 3}
    # BraTS 2023 nesting: ET(3) ⊂ TC(1,3) ⊂ WT(1,2,3); ET borders the core, edema surrounds it
    et, tc, wt = vol.label == 3, np.isin(vol.label, [1, 3]), vol.label > 0
    assert et.sum() < tc.sum() < wt.sum()
    assert adapter.metadata()["regions"] == {"ET": [3], "TC": [1, 3], "WT": [1, 2, 3]}


def test_brats2023_validation_folders(synth_root):
    root = synth_root("brats2023", cases=1, test_cases=1)
    train = get_adapter("brats2023").discover(root)
    test = get_adapter("brats2023", split="test").discover(root)
    assert [c.case_id for c in train] == ["BraTS-GLI-00000-000"] and train[0].label is not None
    assert [c.case_id for c in test] == ["BraTS-GLI-00001-000"] and test[0].label is None and test[0].ok
    assert get_adapter("brats2023", split="test").load(test[0]).label is None


def test_brats2023_missing_modality(broken_copy):
    root = broken_copy("brats2023")
    missing = root / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1c.nii.gz"
    missing.unlink()
    adapter = get_adapter("brats2023")
    cases = adapter.discover(root)
    assert cases[0].ok and cases[1].problems == (f"missing t1c image {missing}",)
    with pytest.raises(CaseError) as info:
        adapter.load(cases[1])
    assert info.value.file == str(missing)


def test_brats2023_empty_folder(tmp_path):
    with pytest.raises(DataError, match="BraTS 2023 layout"):
        get_adapter("brats2023").discover(tmp_path)


def test_isles_flair_resampled_to_dwi_grid(synth_root):
    import nibabel as nib

    root = synth_root("isles2022")
    adapter = get_adapter("isles2022")
    case = adapter.discover(root)[0]
    assert case.case_id == "sub-strokecase0001" and case.label.name == "sub-strokecase0001_ses-0001_msk.nii.gz"
    flair = nib.load(str(case.images["flair"]))
    dwi = nib.load(str(case.images["dwi"]))
    assert flair.shape != dwi.shape  # native space: FLAIR is on another grid
    vol = adapter.load(case)
    assert vol.image.shape == (3, *dwi.shape) and vol.label.shape == dwi.shape
    np.testing.assert_allclose(vol.affine, dwi.affine)
    assert vol.meta["resampled"] == ["flair"] and vol.meta["native_grids"]["flair"]["shape"] == list(flair.shape)
    lesion = vol.label == 1
    assert lesion.any()
    brain = (vol.label == 0) & (vol.image[1] > 0.3 * vol.image[1].max())
    assert vol.image[0][lesion].mean() > 2 * vol.image[0][brain].mean()   # DWI bright
    assert vol.image[2][lesion].mean() > 1.2 * vol.image[2][brain].mean()  # resampled FLAIR still aligned


def test_isles_reference_modality_flair(synth_root):
    root = synth_root("isles2022")
    adapter = get_adapter("isles2022", reference_modality="flair")
    vol = adapter.load(adapter.discover(root)[0])
    assert vol.meta["resampled"] == ["dwi", "adc"] and vol.label.shape == vol.image.shape[1:]
    assert vol.label.any()
    with pytest.raises(ValueError, match="reference_modality 't2'"):
        get_adapter("isles2022", reference_modality="t2")


def test_isles_missing_label_and_wrong_root(broken_copy, tmp_path):
    root = broken_copy("isles2022")
    mask = root / "derivatives" / "sub-strokecase0002" / "ses-0001" / "sub-strokecase0002_ses-0001_msk.nii.gz"
    mask.unlink()
    cases = get_adapter("isles2022").discover(root)
    assert cases[0].ok and cases[1].problems == (f"missing label {mask}",)
    assert [c.case_id for c in get_adapter("isles2022", split="test").discover(root)] == ["sub-strokecase0002"]
    with pytest.raises(DataError, match="no sub-strokecase.* ISLES 2022"):
        get_adapter("isles2022").discover(tmp_path)


def test_ibsr_anisotropic_4d_files(synth_root):
    import nibabel as nib

    root = synth_root("ibsr18")
    adapter = get_adapter("ibsr18")
    case = adapter.discover(root)[0]
    assert nib.load(str(case.images["t1"])).shape == (48, 32, 48, 1)
    vol = adapter.load(case)
    assert vol.image.shape == (1, 48, 32, 48) and vol.spacing == (0.9375, 1.5, 0.9375)
    assert set(np.unique(vol.label)) == {0, 1, 2, 3}
    means = [vol.image[0][vol.label == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1: CSF < GM < WM


def test_ibsr_truncated_label(broken_copy):
    root = broken_copy("ibsr18")
    seg = root / "IBSR_02" / "IBSR_02_seg.nii.gz"
    seg.write_bytes(seg.read_bytes()[:300])
    adapter = get_adapter("ibsr18")
    cases = adapter.discover(root)
    adapter.load(cases[0])
    with pytest.raises(CaseError, match="IBSR_02_seg.nii.gz: cannot decode NIfTI"):
        adapter.load(cases[1])


def test_nifti_pairs_round_trip_and_options(synth_root):
    root = synth_root("nifti_pairs", cases=2, test_cases=1)
    adapter = get_adapter("nifti_pairs", split="all", **PAIRS)
    cases = adapter.discover(root)
    assert [(c.case_id, c.label is not None) for c in cases] == [("case_000", True), ("case_001", True), ("case_002", False)]
    vol = adapter.load(cases[0])
    assert vol.image.shape == (2, 40, 40, 32) and vol.channels == ("T1", "T2") and set(np.unique(vol.label)) == {0, 1}
    test = get_adapter("nifti_pairs", split="test", **PAIRS).discover(root)
    assert [c.case_id for c in test] == ["case_002"]
    regex = get_adapter("nifti_pairs", case_id_regex=r"case_(\d+)/", **PAIRS).discover(root)
    assert regex[0].case_id == "000"
    with pytest.raises(ValueError, match="exactly one group"):
        get_adapter("nifti_pairs", case_id_regex=r"case_\d+", **PAIRS)
    with pytest.raises(ValueError, match="does not take option"):
        get_adapter("msd_brats", images={"a": "*"})


def test_nifti_pairs_missing_modality_and_bad_labels(broken_copy):
    import nibabel as nib

    root = broken_copy("nifti_pairs")
    (root / "case_001" / "t2.nii.gz").unlink()
    adapter = get_adapter("nifti_pairs", labels={1: "lesion"}, **PAIRS)
    cases = adapter.discover(root)
    assert cases[1].problems == ("missing T2 image (glob '*/t2.nii.gz')",)
    with pytest.raises(CaseError, match="case_001"):
        adapter.load(cases[1])
    lab = root / "case_000" / "label.nii.gz"
    img = nib.load(str(lab))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 5, img.affine), str(lab))
    with pytest.raises(CaseError, match=r"label.nii.gz: label values \[5\] are not in the label map"):
        adapter.load(cases[0])
    with pytest.raises(DataError, match="no file under"):
        get_adapter("nifti_pairs", images={"T1": "*/nothing.nii.gz"}).discover(root)


def test_adapter_from_spec(tmp_path):
    from voxray.platform.specs.preprocess import DatasetSpec
    from voxray.preprocessing.datasets import adapter_from_spec

    spec = DatasetSpec(layout="nifti_pairs", root=str(tmp_path), split="test", case_id_regex=r"(\w+)/t1", **PAIRS)
    adapter = adapter_from_spec(spec)
    assert adapter.split == "test" and adapter.channels == ("T1", "T2") and adapter.case_id_regex.pattern == r"(\w+)/t1"
    isles = adapter_from_spec(DatasetSpec(layout="isles2022", root=str(tmp_path), reference_modality="adc"))
    assert isles.reference_modality == "adc"

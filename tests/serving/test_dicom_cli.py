"""`voxray predict` on DICOM: series folders or a zip in, NIfTI mask or DICOM-SEG out, equal to the NIfTI
prediction; bad DICOM gives one line and exit code 4."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

from voxray.platform.cli.app import main
from voxray.serving.stats import class_masks
from voxray.training.predict import Predictor, volume_from_images

from _dicom import dcm_bytes, oblique_images, study, zip_study
from conftest import CHANNELS


@pytest.fixture(scope="module")
def case(tiny_model, tmp_path_factory):
    """Series folders named after the channels, the same study as one zip, and the NIfTI prediction."""
    nifti = oblique_images(CHANNELS, seed=3)
    series = study(nifti, {"flair": "Ax FLAIR", "t1gd": "Ax T1 Gd"})
    root = tmp_path_factory.mktemp("dicom")
    for channel, datasets in series.items():
        (root / channel).mkdir()
        for k, ds in enumerate(datasets):
            (root / channel / f"IM{k:04d}").write_bytes(dcm_bytes(ds))  # no suffix, as PACS exports write them
    (root / "study.zip").write_bytes(zip_study(series))
    predictor = Predictor.from_registry(tiny_model)
    return root, series, predictor.predict(volume_from_images(nifti, CHANNELS)), nifti, predictor.card


def _predict(model, *args: str) -> int:
    return main(["predict", "--model", str(model.parent), *args])


def test_folders_to_nifti_and_zip_to_dicom_seg(tiny_model, case, tmp_path):
    root, series, expected, nifti, card = case
    assert _predict(tiny_model, "-i", str(root / "flair"), "-i", str(root / "t1gd"), "-o",
                    str(tmp_path / "mask.nii.gz")) == 0
    mask = nib.load(str(tmp_path / "mask.nii.gz"))
    assert np.allclose(mask.affine, nifti["flair"].affine, atol=1e-4)
    assert np.array_equal(np.asarray(mask.dataobj), expected)

    assert _predict(tiny_model, "-i", str(root / "study.zip"), "-o", str(tmp_path / "seg.dcm")) == 0
    seg = hd.seg.segread(str(tmp_path / "seg.dcm"))
    uids = [ds.SOPInstanceUID for ds in series["flair"]]
    frames = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])
    wanted = class_masks(expected, card)
    assert any(on.any() for on in wanted.values())
    for n, on in enumerate(wanted.values()):
        assert np.array_equal(frames[..., n].transpose(2, 1, 0).astype(bool), on)


def test_series_option_and_one_line_errors(tiny_model, case, tmp_path, capsys):
    root, _, expected, _, _ = case
    out = tmp_path / "m.nii.gz"
    assert _predict(tiny_model, "-i", str(root / "study.zip"), "--series", "flair=FLAIR$", "--series",
                    "t1gd=T1 Gd$", "-o", str(out)) == 0
    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), expected)
    assert _predict(tiny_model, "-i", str(root / "study.zip"), "--series", "flair=nothing", "-o", str(out)) == 4
    err = capsys.readouterr().err
    assert "no DICOM series for channel(s)" in err and "Traceback" not in err
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    assert _predict(tiny_model, "-i", str(tmp_path / "notes"), "-o", str(out)) == 4
    assert "readme.txt: not a DICOM file" in capsys.readouterr().err

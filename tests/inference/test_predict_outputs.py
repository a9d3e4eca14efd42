"""`voxray predict` and `Predictor`: exact input shape and affine, decode errors naming the file, probabilities,
uncertainty maps and score, TTA, larger windows, progress."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest

from voxray.platform.cli.app import main
from voxray.training.predict import InvalidInput, Predictor, predict_files, predict_images
from voxray.training.progress import WindowProgress

from _infer_helpers import AFFINE, SHAPE, export_tiny, volume, write


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory):
    return export_tiny(tmp_path_factory.mktemp("reg"), ["flair", "t1gd"])


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    return write(tmp_path_factory.mktemp("in") / "case.nii.gz", volume())


def test_singleton_axis_and_affine_survive(tmp_path):
    model = export_tiny(tmp_path / "reg", ["t1"])
    path = write(tmp_path / "t1.nii.gz", volume(channels=1))  # (X, Y, Z, 1), as ibsr18 ships its scans
    mask = predict_files(Predictor.from_registry(model), path)
    assert mask.shape == (*SHAPE, 1) and np.allclose(mask.affine, AFFINE)
    assert main(["predict", "-m", str(model), "-i", str(path), "-o", str(tmp_path / "m.nii.gz"),
                 "--probabilities", str(tmp_path / "p.nii.gz")]) == 0
    assert nib.load(str(tmp_path / "m.nii.gz")).shape == (*SHAPE, 1)
    assert nib.load(str(tmp_path / "p.nii.gz")).shape == (*SHAPE, 3)


def test_unreadable_inputs_are_one_line_naming_the_file(two_channel, case, tmp_path, capsys):
    raw = case.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InvalidInput, match="cut.nii.gz: not a readable NIfTI image: the file ends early"):
        predict_files(Predictor.from_registry(two_channel), cut)
    bad_gzip = tmp_path / "bad.nii.gz"
    bad_gzip.write_bytes(raw[:100] + bytes(200) + raw[300:])
    for path in (cut, bad_gzip, tmp_path / "absent.nii.gz"):
        capsys.readouterr()
        assert main(["predict", "-m", str(two_channel), "-i", str(path), "-o", str(tmp_path / "m.nii.gz")]) == 4
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and path.name in err[0] and "Abort" not in err[0], err


def test_probabilities_sum_to_one_and_agree_with_the_mask(two_channel, case):
    predictor = Predictor.from_registry(two_channel)
    pred, like = predict_images(predictor, case, ("mask", "probabilities"))
    probs = pred.probabilities
    assert probs.shape == (3, *SHAPE)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    body = pred.mask > 0
    assert (probs.argmax(0)[body] == pred.mask[body]).mean() > 0.95  # linear vs nearest resampling at edges
    assert (pred.mask[:3] == 0).all() and np.allclose(probs[0, :3], 1.0)  # outside the crop: certain background


def test_sigmoid_probabilities_are_per_channel(tmp_path, case):
    model = export_tiny(tmp_path / "reg", ["flair", "t1gd"], task="brats_regions")
    pred, _ = predict_images(Predictor.from_registry(model), case, ("mask", "probabilities"))
    assert pred.probabilities.shape == (2, *SHAPE)
    assert pred.probabilities.min() >= 0 and pred.probabilities.max() <= 1 and np.allclose(pred.probabilities[:, :3], 0)


def test_cli_writes_uncertainty_and_reports_the_score(two_channel, case, tmp_path, capsys):
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("mask", "unc", "unc_tta")}
    assert main(["predict", "-m", str(two_channel), "-i", str(case), "-o", str(out["mask"]),
                 "--uncertainty", str(out["unc"]), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout holds the JSON alone; the human lines go to stderr
    assert "mean entropy" in captured.err and "windows" in captured.err
    unc = summary["uncertainty"]
    assert unc["tta_members"] == 1 and 0 <= unc["score"] <= unc["max_entropy"] == pytest.approx(np.log(3))
    entropy = nib.load(str(out["unc"]))
    assert entropy.shape == SHAPE and np.allclose(entropy.affine, AFFINE)
    assert np.asarray(entropy.dataobj)[:3].max() == 0 and np.asarray(entropy.dataobj).max() > 0
    assert main(["predict", "-m", str(two_channel), "-i", str(case), "--uncertainty", str(out["unc_tta"]),
                 "--tta", "mirror", "--json"]) == 0
    tta = json.loads(capsys.readouterr().out)["uncertainty"]
    both = nib.load(str(out["unc_tta"]))
    assert tta["tta_members"] == 8 and both.shape == (*SHAPE, 2)  # entropy, then the members' variance
    assert np.asarray(both.dataobj)[..., 1].max() > 0


def test_tta_changes_the_prediction_of_an_asymmetric_network(two_channel, case):
    plain = Predictor.from_registry(two_channel)
    mirrored = Predictor.from_registry(two_channel, tta="mirror")
    vol = predict_images(plain, case, ("probabilities",))[0].probabilities
    tta = predict_images(mirrored, case, ("probabilities",))[0].probabilities
    one_axis = predict_images(plain, case, ("probabilities",), tta=[1])[0].probabilities
    assert np.abs(tta - vol).max() > 1e-3 and not np.allclose(one_axis, tta)
    np.testing.assert_allclose(tta.sum(0), 1.0, atol=1e-4)


def test_larger_window_for_a_fully_convolutional_model(two_channel, case):
    seen = []
    pred, _ = predict_images(Predictor.from_registry(two_channel, window=[32, 32, 32], batch=1), case,
                             progress=lambda done, total: seen.append((done, total)))
    assert pred.mask.shape == SHAPE and seen[-1] == (1, 1)  # the whole cropped volume in one window
    with pytest.raises(Exception, match="not divisible"):
        Predictor.from_registry(two_channel, window=[33, 32, 32])


def test_cli_rejects_bad_settings(two_channel, case, tmp_path, capsys):
    assert main(["predict", "-m", str(two_channel), "-i", str(case), "-o", str(tmp_path / "m.nii.gz"),
                 "--window", "33"]) == 2
    assert "not divisible" in capsys.readouterr().err
    assert main(["predict", "-m", str(two_channel), "-i", str(case), "-o", str(tmp_path / "m.nii.gz"),
                 "--tta", "sideways"]) == 1
    assert "--tta" in capsys.readouterr().err


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    with WindowProgress(stream=stream, line_interval=0) as progress:
        for done in (0, 4, 4, 8, 12):
            progress(done, 12)
    lines = stream.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["0/12", "4/12", "8/12", "12/12"]  # repeats are dropped
    assert all("windows/s" in line and "ETA" in line for line in lines)
    quiet = io.StringIO()
    with WindowProgress(stream=quiet, line_interval=3600) as progress:
        for done in range(1, 13):
            progress(done, 12)
    assert quiet.getvalue().count("\n") == 1 and "12/12" in quiet.getvalue()  # the final line always


def test_an_eof_anywhere_is_not_a_bare_abort(two_channel, case, tmp_path, capsys, monkeypatch):
    import voxray.training.predict as predict

    def ends_early(*args, **kwargs):
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")

    monkeypatch.setattr(predict, "predict_images", ends_early)
    assert main(["predict", "-m", str(two_channel), "-i", str(case), "-o", str(tmp_path / "m.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "ended early (EOFError: Compressed file ended" in err and "Abort" not in err


def test_2d_model_progress_counts_every_slice(case):
    import torch

    class Slice2d(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

    card = {"patch": [16, 16], "channels": ["flair", "t1gd"], "task": "labels",
            "labels": {0: "background", 1: "edema", 2: "tumour"}, "preprocess": {}}
    seen = []
    pred, _ = predict_images(Predictor(Slice2d(), card), case, progress=lambda d, t: seen.append((d, t)))
    assert pred.mask.shape == SHAPE and seen[-1][0] == seen[-1][1] and all(t == seen[-1][1] for _, t in seen)
    assert seen[-1][1] % 13 == 0  # the cropped volume's 13 Z slices, each with the same windows

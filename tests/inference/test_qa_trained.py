"""Input QA end to end with a trained model exported as training does: a held-back case passes, swapped channels
and a 5 mm resampled scan are flagged through `voxray predict` and over HTTP; `refuse` stops them (exit 4, 422);
the uncertainty score comes with its percentile among the validation cases."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy import ndimage

from voxray.platform.cli.app import main
from voxray.serving.app import build_app
from voxray.serving.service import ModelService
from voxray.serving.validation import Limits
from voxray.training.export import export_checkpoint
from voxray.training.predict import Predictor

from _infer_helpers import recorded_store, train_helpers

pytestmark = pytest.mark.slow

VAL_SEEDS = {f"val{i:02d}": 20 + i for i in range(6)}


@pytest.fixture(scope="module")
def model_dir(trained_unet, tmp_path_factory):
    """The session's trained UNet exported with 6 held-out validation cases beside its 6 training cases."""
    t = trained_unet
    store = recorded_store({**{c: i for i, c in enumerate(t.store.case_ids())}, **VAL_SEEDS})
    return export_checkpoint(t.checkpoint, t.spec, store, name="qa", registry_root=str(tmp_path_factory.mktemp("reg")),
                             metrics=t.metrics, source={}, val_ids=list(VAL_SEEDS))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """4D NIfTI (X, Y, Z, C) files: a held-back case, its channels swapped (FLAIR ↔ T1w), and a taller scan of the
    same kind (44 mm, so 5 mm slices still give the window's minimum extent) resampled to 5 mm slices."""
    helpers = train_helpers()
    data = helpers.brats_like_case((24, 24, 24), seed=50)[0].transpose(3, 2, 1, 0)  # (C, Z, Y, X) → (X, Y, Z, C)
    tall = helpers.brats_like_case((44, 24, 24), seed=50)[0].transpose(3, 2, 1, 0)
    folder = tmp_path_factory.mktemp("in")
    thick = ndimage.zoom(tall, (1, 1, 9 / 44, 1), order=1)  # 44 slices of 1 mm → 9 of ~5 mm
    files = {"normal": (data, np.eye(4)), "swapped": (data[..., [1, 0, 2, 3]], np.eye(4)),
             "thick": (thick, np.diag([1.0, 1.0, 44 / 9, 1.0]))}
    out = {}
    for name, (arr, affine) in files.items():
        out[name] = folder / f"{name}.nii.gz"
        nib.Nifti1Image(np.ascontiguousarray(arr, dtype=np.float32), affine).to_filename(str(out[name]))
    return out


def _codes(qa: dict) -> set[str]:
    return {f["code"] for f in qa["findings"] if f["severity"] == "warn"}


def test_card_holds_fingerprint_and_validation_scores(model_dir):
    card = Predictor.from_registry(model_dir).card
    assert card["fingerprint"]["cases"] == 6 and card["fingerprint"]["spacing"]["max"] == [1.0, 1.0, 1.0]
    assert card["uncertainty_reference"]["cases"] == 6 and len(card["uncertainty_reference"]["scores"]) == 6


def test_cli_flags_swapped_and_thick_inputs_and_refuses(model_dir, inputs, tmp_path, capsys):
    summaries = {}
    for name, path in inputs.items():
        capsys.readouterr()
        assert main(["predict", "-m", str(model_dir), "-i", str(path), "--json"]) == 0
        captured = capsys.readouterr()
        summaries[name] = (json.loads(captured.out), captured.err)
    normal, err = summaries["normal"]
    assert normal["qa"]["status"] == "ok" and normal["qa"]["findings"] == [] and "input QA" not in err
    assert "channel_order" in _codes(summaries["swapped"][0]["qa"])
    assert "warning: input QA warn: channel_order" in summaries["swapped"][1]
    assert "spacing" in _codes(summaries["thick"][0]["qa"])
    unc = {k: s["uncertainty"] for k, (s, _) in summaries.items()}
    assert unc["swapped"]["percentile"] == 100.0 and unc["normal"]["percentile"] < 100.0, unc
    assert "among 6 validation cases" in err
    capsys.readouterr()
    code = main(["predict", "-m", str(model_dir), "-i", str(inputs["swapped"]), "-o", str(tmp_path / "m.nii.gz"),
                 "--qa", "refuse"])
    assert code == 4 and not (tmp_path / "m.nii.gz").exists()
    assert "input QA refused the input (policy refuse): channel_order" in capsys.readouterr().err
    assert main(["predict", "-m", str(model_dir), "-i", str(inputs["normal"]), "-o", str(tmp_path / "m.nii.gz"),
                 "--qa", "refuse"]) == 0


def test_http_qa_block_header_and_refusal(model_dir, inputs):
    def client(policy: str) -> TestClient:
        return TestClient(build_app(ModelService(Predictor.from_registry(model_dir, qa=policy), Limits(), None)))

    body = {name: path.read_bytes() for name, path in inputs.items()}
    with client("warn") as c:
        normal = c.post("/v1/predict?format=json", content=body["normal"],
                        headers={"Content-Type": "application/octet-stream"})
        assert normal.status_code == 200 and normal.json()["qa"]["status"] == "ok", normal.text
        assert normal.json()["uncertainty"]["reference_cases"] == 6
        swapped = c.post("/v1/predict", content=body["swapped"], headers={"Content-Type": "application/octet-stream"})
        assert swapped.status_code == 200 and swapped.headers["X-Voxray-QA"].startswith("warn; ")
        assert "channel_order" in swapped.headers["X-Voxray-QA"]
        thick = c.post("/v1/predict?format=json", content=body["thick"],
                       headers={"Content-Type": "application/octet-stream"})
        assert "spacing" in _codes(thick.json()["qa"])
    with client("refuse") as c:
        refused = c.post("/v1/predict", content=body["thick"], headers={"Content-Type": "application/octet-stream"})
        assert refused.status_code == 422 and "spacing" in refused.json()["detail"]
        assert c.post("/v1/predict", content=body["normal"],
                      headers={"Content-Type": "application/octet-stream"}).status_code == 200

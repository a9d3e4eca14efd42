"""ONNX export and the onnxruntime backend: `voxray export --onnx` round-trips a MONAI UNet (and, slow, the demo
Swin Factorizer) with max |Δ logits| torch vs onnxruntime below TOL; predict and serving run the same pre/post and
window logic on onnxruntime; a missing export, another window or a GPU device are clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxray.platform.cli.app import main
from voxray.training.onnx_export import OnnxNetwork, OnnxUnavailable, export_onnx
from voxray.training.predict import Predictor, predict_images
from voxray.training.registry import build_from_card, export_model, load_model, read_card

from _http import http_mask
from _infer_helpers import export_tiny, tiny_card, volume, write

TOL = 1e-4
"""max |Δ logits| accepted between torch and onnxruntime (float32 kernels differ by ~1e-6)."""


def _logit_gap(vdir, windows: int = 3) -> float:
    model, card = load_model(vdir)
    net = OnnxNetwork(vdir / card["onnx"]["file"])
    x = torch.randn(windows, card["in_channels"], *card["onnx"]["window"], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    ref = ref[0] if isinstance(ref, (list, tuple)) else ref
    return float((net(x) - ref).abs().max())


@pytest.mark.slow
def test_unet_round_trip_predict_and_serve(tmp_path):
    vdir = export_tiny(tmp_path / "reg", ["t1", "t2"], restrict_to_nonzero=True)
    assert main(["export", str(vdir), "--onnx"]) == 0
    block = read_card(vdir)["onnx"]
    assert (vdir / "model.onnx").is_file() and block["exporter"] == "dynamo" and block["window"] == [16, 16, 16]
    assert _logit_gap(vdir) < TOL and block["max_abs_diff"] < TOL
    path = write(tmp_path / "case.nii.gz", volume(channels=2))
    want = ("mask", "probabilities")
    torch_pred, like = predict_images(Predictor.from_registry(vdir, device="cpu"), path, want)
    onnx_predictor = Predictor.from_registry(vdir, backend="onnxruntime")
    assert isinstance(onnx_predictor.model, OnnxNetwork) and "onnxruntime" in onnx_predictor.settings.describe()
    onnx_pred, _ = predict_images(onnx_predictor, path, want)
    assert np.abs(onnx_pred.probabilities - torch_pred.probabilities).max() < TOL
    assert (onnx_pred.mask == torch_pred.mask).mean() > 0.999 and onnx_pred.mask.shape == like.shape[:3]
    served, _, info = http_mask(onnx_predictor, path)
    assert info["backend"] == "onnxruntime"
    assert served.shape == like.shape[:3] and np.array_equal(np.asarray(served.dataobj), onnx_pred.mask)
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--model", str(vdir), "--input", str(path), "--out", str(out),
                 "--backend", "onnxruntime", "--qa", "off"]) == 0
    import nibabel as nib

    assert np.array_equal(np.asarray(nib.load(str(out)).dataobj), onnx_pred.mask)


def test_backend_errors_name_the_fix(tmp_path):
    vdir = export_tiny(tmp_path / "reg", ["t1", "t2"])
    with pytest.raises(OnnxUnavailable, match="no ONNX export") as exc:
        Predictor.from_registry(vdir, backend="onnxruntime")
    assert "voxray export --onnx" in (exc.value.hint or "")
    export_onnx(vdir, default_backend=True)
    assert read_card(vdir)["inference"]["backend"] == "onnxruntime"
    assert isinstance(Predictor.from_registry(vdir).model, OnnxNetwork)  # the card's default now
    with pytest.raises(OnnxUnavailable, match="windows of \\[16, 16, 16\\], not \\[32, 32, 32\\]"):
        Predictor.from_registry(vdir, window=[32, 32, 32])
    if not torch.cuda.is_available():
        from voxray.training.predict_settings import InvalidSettings

        with pytest.raises((InvalidSettings, OnnxUnavailable)):
            Predictor.from_registry(vdir, device="cuda")


@pytest.mark.slow
def test_demo_factorizer_round_trip(tmp_path):
    """The demo's Swin Factorizer architecture at a small size: the dynamo exporter keeps the batch dynamic."""
    card = tiny_card(["t1", "t2"], "brats_regions", patch=[16, 16, 16],
                     model={"name": "swin_factorizer", "widths": [4, 8, 8, 16], "window": 2, "head_dim": 4,
                            "mlp_ratio": 2})
    torch.manual_seed(0)
    vdir = export_model(build_from_card(card), card, tmp_path / "reg", "factorizer")
    block = export_onnx(vdir)
    assert block["exporter"] == "dynamo" and block["max_abs_diff"] < TOL
    assert _logit_gap(vdir, windows=5) < TOL

"""Inference settings: the card's `inference:` block, overrides, and the windows each model can take."""

from __future__ import annotations

import pytest
import torch

from voxray.platform.specs.inference import InferenceSpec, parse_tta
from voxray.platform.specs.train import TrainSpec
from voxray.training.predict_settings import InvalidSettings, inference_card, mirror_axes, resolve_settings

FACTORIZER = {"name": "swin_factorizer", "widths": [8, 16, 32, 64], "window": 4, "head_dim": 4, "mlp_ratio": 2}
UNET = {"name": "unet", "channels": [4, 8, 16], "num_res_units": 0}


def _card(model: dict, inference: dict | None = None) -> dict:
    card = {"model": model, "patch": [32, 32, 32]}
    return card | ({"inference": inference} if inference is not None else {})


def test_older_cards_get_defaults_and_the_card_wins_over_them():
    s = resolve_settings(_card(UNET))
    assert (s.window, s.overlap, s.batch, s.mirror, s.device.type) == ((32, 32, 32), 0.25, 4, (), "cpu")
    s = resolve_settings(_card(UNET, {"overlap": 0.5, "batch": 2, "tta": "mirror", "device": "cpu"}))
    assert (s.overlap, s.batch, s.mirror, s.tta_members) == (0.5, 2, (0, 1, 2), 8)
    s = resolve_settings(_card(UNET, {"tta": "mirror"}), tta="none", overlap=0.1, batch=None)
    assert (s.mirror, s.overlap, s.batch) == ((), 0.1, 4)
    assert "TTA ×8 (axes 0,1,2)" in resolve_settings(_card(UNET), tta="mirror").describe()


def test_window_rules_per_model():
    assert resolve_settings(_card(UNET), window=[64, 64, 48]).window == (64, 64, 48)  # fully convolutional
    with pytest.raises(InvalidSettings, match="not divisible by 4"):
        resolve_settings(_card(UNET), window=[66, 64, 64])
    with pytest.raises(InvalidSettings, match="fixed input size"):
        resolve_settings(_card(FACTORIZER), window=[64, 64, 64])
    assert resolve_settings(_card(FACTORIZER), window=[32, 32, 32]).window == (32, 32, 32)
    no_embed = FACTORIZER | {"pos_embed": False}  # without the positional embedding it slides any multiple
    assert resolve_settings(_card(no_embed), window=[64, 64, 64]).window == (64, 64, 64)
    with pytest.raises(InvalidSettings, match="has 2 dims"):
        resolve_settings(_card(UNET), window=[64, 64])


def test_bad_values_are_one_clear_error():
    with pytest.raises(InvalidSettings, match="overlap"):
        resolve_settings(_card(UNET), overlap=1.5)
    with pytest.raises(InvalidSettings, match="device"):
        resolve_settings(_card(UNET), device="tpu")
    with pytest.raises(InvalidSettings, match="precision"):
        resolve_settings(_card(UNET), precision="int8")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidSettings, match="CUDA is not available"):
            resolve_settings(_card(UNET), device="cuda")
    assert resolve_settings(_card(UNET), precision="bf16").effective_precision in ("fp32", "bf16")


def test_tta_parsing():
    assert parse_tta("none") == "none" and parse_tta("Mirror") == "mirror" and parse_tta("0,2") == [0, 2]
    with pytest.raises(ValueError, match="comma-separated"):
        parse_tta("flip")
    assert mirror_axes("mirror", 2) == (0, 1) and mirror_axes([2, 0], 3) == (0, 2)
    with pytest.raises(InvalidSettings, match="axes 0..1"):
        mirror_axes([2], 2)
    with pytest.raises(ValueError, match="distinct"):
        InferenceSpec(tta=[0, 0])


def test_card_block_at_export_fills_the_window_and_never_fails_a_run():
    spec = TrainSpec(model=FACTORIZER, patch=[32, 32, 32], inference={"tta": "mirror", "batch": 8})
    block = inference_card(spec)
    assert block["window"] == [32, 32, 32] and block["tta"] == "mirror" and block["batch"] == 8
    bad = TrainSpec(model=FACTORIZER, patch=[32, 32, 32], inference={"window": [64, 64, 64], "tta": "mirror"})
    assert inference_card(bad)["window"] == [32, 32, 32]  # logged, replaced by the patch
    assert resolve_settings(_card(FACTORIZER, inference_card(spec))).mirror == (0, 1, 2)

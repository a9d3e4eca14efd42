"""Registry export/load and in-process prediction (no Ray)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from voxray.platform.cli.app import main
from voxray.preprocessing.datasets import Volume
from voxray.training.channels import ChannelMismatch, match_channels, name_inputs
from voxray.training.predict import InvalidInput, Predictor, predict_files, volume_from_images
from voxray.training.registry import (InvalidCard, ModelNotFound, export_model, list_versions, load_model,
                                      read_card, resolve_version)

from conftest import CHANNELS, SHAPE, export_tiny, make_card


def test_versions_and_roundtrip(tmp_path):
    first = export_tiny(tmp_path, "m")
    second = export_tiny(tmp_path, "m")
    assert (first.name, second.name) == ("1", "2") and list_versions(tmp_path / "m") == [1, 2]
    assert resolve_version(tmp_path / "m") == second and resolve_version(first) == first
    card = yaml.safe_load((second / "model.yaml").read_text())
    assert card["name"] == "m" and card["version"] == 2 and card["labels"][2] == "tumour"
    model, loaded = load_model(tmp_path / "m")
    assert not model.training and loaded["channels"] == CHANNELS
    from safetensors.torch import load_file

    saved = load_file(str(second / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("m/.export-*"))  # no temp folders left behind


def test_registry_errors(tmp_path):
    with pytest.raises(ModelNotFound):
        load_model(tmp_path / "absent")
    bad = make_card()
    bad["channels"] = ["flair"]
    with pytest.raises(InvalidCard, match="in_channels"):
        export_model(torch.nn.Conv3d(2, 3, 1), bad, tmp_path, "bad")
    version = export_tiny(tmp_path, "wrong")
    card = read_card(version)
    card["model"]["channels"] = [8, 16]
    (version / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(InvalidCard, match="do not fit"):
        load_model(version)


def test_predict_in_input_grid(tiny_model, images):
    predictor = Predictor.from_registry(tiny_model)
    volume = volume_from_images(images, predictor.channels)
    mask = predictor.predict(volume)
    assert mask.shape == SHAPE and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
    assert (mask[:3] == 0).all()  # the zero background outside the crop stays background
    swapped = Volume(image=volume.image[::-1].copy(), label=None, affine=volume.affine, channels=("T1-Gd", "FLAIR"))
    assert np.array_equal(predictor.predict(swapped), mask)
    many = predictor.predict_many([volume, swapped, volume])
    assert all(np.array_equal(m, mask) for m in many)


def test_predict_files_and_cli(tiny_model, images, tmp_path):
    predictor = Predictor.from_registry(tiny_model)
    expected = predictor.predict(volume_from_images(images, CHANNELS))
    paths = {}
    for name, img in images.items():
        paths[name] = tmp_path / f"BraTS_001_{name}.nii.gz"
        img.to_filename(str(paths[name]))
    four_d = tmp_path / "case.nii.gz"
    nib.Nifti1Image(np.stack([np.asarray(images[c].dataobj) for c in CHANNELS], -1),
                    images["flair"].affine).to_filename(str(four_d))
    out = predict_files(predictor, four_d)
    assert np.array_equal(np.asarray(out.dataobj), expected) and np.allclose(out.affine, images["flair"].affine)
    code = main(["predict", "--model", str(tiny_model.parent), "--input", str(paths["flair"]), "--input",
                 str(paths["t1gd"]), "--out", str(tmp_path / "mask.nii.gz")])
    assert code == 0
    assert np.array_equal(np.asarray(nib.load(str(tmp_path / "mask.nii.gz")).dataobj), expected)
    assert main(["predict", "--model", str(tmp_path / "nope"), "--input", str(four_d), "--out", "x.nii.gz"]) == 4


def test_input_problems(images):
    with pytest.raises(InvalidInput, match="grid"):
        volume_from_images({"flair": images["flair"], "t1gd": nib.Nifti1Image(np.ones((4, 4, 4), np.float32),
                                                                                np.eye(4))}, CHANNELS)
    with pytest.raises(ChannelMismatch, match="missing"):
        match_channels(["flair"], CHANNELS)
    assert match_channels(["t1ce", "T2-FLAIR"], CHANNELS) == ["T2-FLAIR", "t1ce"]
    assert name_inputs(["x/BraTS_1_t1ce.nii.gz", "flair=a.nii"], CHANNELS) == {"t1gd": "x/BraTS_1_t1ce.nii.gz",
                                                                             "flair": "a.nii"}
    with pytest.raises(ChannelMismatch, match="cannot tell"):
        name_inputs(["a.nii.gz", "b.nii.gz"], CHANNELS)

"""`voxray models` and `voxray models show` as a user runs them (in-process `main`, JSON parsed)."""

from __future__ import annotations

import json

import pytest

from voxray.platform.cli.app import main


def test_models_lists_the_registry(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"swin_factorizer", "unet_depth", "deeplabv3plus"} <= {r["name"] for r in rows}
    assert main(["models"]) == 0
    assert "efficientnet_unet" in capsys.readouterr().out


@pytest.mark.slow  # builds the full 7.4 M-parameter ISLES net
def test_show_isles_factorizer_json(capsys):
    code = main(["models", "show", "swin_factorizer", "--set", "window=4", "--set", "head_dim=4", "--set",
                 "mlp_ratio=4", "--in-channels", "2", "--out-channels", "1", "--patch", "64", "64", "64", "--json"])
    assert code == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 7_371_523
    assert abs(info["gflops"] - 28.5) < 0.3
    assert info["outputs"] == [[1, 1, 64, 64, 64], [1, 1, 32, 32, 32], [1, 1, 16, 16, 16]]
    assert info["constraints"] == {"divisor": 64, "fixed_size": [64, 64, 64]}


def test_show_2d_model_table(capsys):
    assert main(["models", "show", "unet_depth", "--set", "depth=3", "--set", "base_channels=4", "--patch",
                 "32,32"]) == 0
    out = capsys.readouterr().out
    assert "params" in out and "[[1, 2, 32, 32]]" in out


def test_bad_field_and_bad_patch_exit_2_with_paths(capsys):
    assert main(["models", "show", "unet_depth", "--set", "depth=9"]) == 2
    assert "train.model.depth" in capsys.readouterr().err
    assert main(["models", "show", "unet_depth", "--set", "depth=4", "--patch", "36", "36"]) == 2
    assert "train.patch: [36, 36] is not divisible" in capsys.readouterr().err
    assert main(["models", "show", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err

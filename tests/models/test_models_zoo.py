"""Registry: every name builds from its spec (tiny settings), constraints, and spec errors with YAML paths."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from voxray.platform.errors import SpecError
from voxray.platform.specs.models import ModelSpec
from voxray.training.models import REGISTRY, build_model, check_model, list_models, model_constraints

SPEC = TypeAdapter(ModelSpec)

# name → (tiny spec overrides, spatial dims, patch): forward passes stay well under a second each.
TINY = {
    "swin_factorizer": ({"widths": [4, 8, 8, 16], "head_dim": 4, "window": 2}, 3, (16, 16, 16)),
    "unet": ({"channels": [4, 8, 16], "num_res_units": 1}, 3, (16, 16, 16)),
    "unet_2d": ({"name": "unet", "channels": [4, 8, 16]}, 2, (32, 16)),
    "segresnet": ({"init_filters": 8, "blocks_down": [1, 1, 1]}, 3, (16, 16, 16)),
    "unetr": ({"feature_size": 4, "hidden_size": 48, "mlp_dim": 64, "num_heads": 4}, 3, (32, 32, 32)),
    "swinunetr": ({"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}, 3, (64, 32, 32)),
    "swinunetr_2d": ({"name": "swinunetr", "feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
                     2, (64, 32)),
    "efficientnet_unet": ({"decoder_channels": [16, 8, 8, 8, 8]}, 2, (64, 64)),
    "unet_depth": ({"depth": 3, "base_channels": 4}, 2, (32, 32)),
    "deeplabv3plus": ({"aspp_channels": 16, "aspp_rates": [1, 2]}, 2, (64, 64)),
}


def _spec(key: str):
    overrides, dims, patch = TINY[key]
    return SPEC.validate_python({"name": key, **overrides}), dims, patch


def test_list_models_covers_the_registry():
    rows = {r["name"]: r for r in list_models()}
    assert set(rows) == set(REGISTRY) >= {"swin_factorizer", "factorizer", "unet", "segresnet", "unetr", "swinunetr",
                                          "efficientnet_unet", "unet_depth", "deeplabv3plus"}
    assert rows["unet_depth"]["dims"] == [2] and rows["swin_factorizer"]["dims"] == [3, 2]
    assert all(r["description"] for r in rows.values())


@pytest.mark.parametrize("key", list(TINY))
def test_every_model_builds_and_runs(key):
    torch.manual_seed(0)
    spec, dims, patch = _spec(key)
    net = build_model(spec, in_channels=2, out_channels=3, spatial_dims=dims, patch=patch).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 2, *patch))
    first = out[0] if isinstance(out, list) else out
    assert first.shape == (2, 3, *patch)
    if spec.name == "swin_factorizer":
        assert [tuple(o.shape[2:]) for o in out] == [patch, (8,) * 3, (4,) * 3]


def test_constraints():
    fact, _, _ = _spec("swin_factorizer")
    assert model_constraints(fact, 3, [16] * 3) == {"divisor": 16, "fixed_size": (16, 16, 16)}
    free = fact.model_copy(update={"pos_embed": False})
    assert model_constraints(free, 3, [32] * 3) == {"divisor": 16, "fixed_size": None}
    assert model_constraints(_spec("unet_depth")[0], 2, [64, 64])["divisor"] == 4
    assert model_constraints(_spec("unetr")[0], 3, [32] * 3)["fixed_size"] == (32, 32, 32)
    assert model_constraints(SPEC.validate_python({"name": "swinunetr"}), 2, [64, 64])["divisor"] == 32


@pytest.mark.parametrize("name, dims, patch, channels, path", [
    ("unet_depth", 2, (36, 36), 1, "train.patch: [36, 36] is not divisible by 2**(depth-1) with depth 4"),
    ("efficientnet_unet", 3, (64, 64, 64), 1, "train.patch: efficientnet_unet supports 2D"),
    ("swin_factorizer", 3, (64, 64, 64), 1, "train.patch: [64, 64, 64] is not divisible by 2**(levels-1) * window"),
    ("unet", 3, (32, 32), 1, "train.patch: [32, 32] must hold 3"),
    ("segresnet", 3, (32, 32, 32), 0, "train.channels: segresnet needs >= 1 input channel"),
])
def test_bad_combinations_raise_spec_errors_with_paths(name, dims, patch, channels, path):
    spec = SPEC.validate_python({"name": name})
    with pytest.raises(SpecError) as err:
        build_model(spec, in_channels=channels, out_channels=2, spatial_dims=dims, patch=patch)
    assert path in str(err.value)
    assert check_model(spec, in_channels=channels, out_channels=2, spatial_dims=dims, patch=patch)


@pytest.mark.parametrize("data, field", [
    ({"name": "unet_depth", "depth": 0}, "depth"),
    ({"name": "swin_factorizer", "widths": [32, 60, 128, 256]}, "head_dim"),
    ({"name": "swinunetr", "feature_size": 30}, "feature_size"),
    ({"name": "unetr", "hidden_size": 50}, "hidden_size"),
    ({"name": "unet", "channels": [16]}, "channels"),
    ({"name": "segresnet", "widths": [1]}, "widths"),
])
def test_spec_rejects_bad_fields(data, field):
    with pytest.raises(ValidationError, match=field):
        SPEC.validate_python(data)


def test_import_is_lazy():
    code = ("import sys, voxray.training.models, voxray.platform.specs.models;"
            "print(any(m == 'monai' or m.startswith('monai.') for m in sys.modules), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]

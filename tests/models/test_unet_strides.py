"""Anisotropic UNet strides (thick-slice data pools in plane first): spec checks, per-axis divisors, forward."""

from __future__ import annotations

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from voxray.platform.specs.models import ModelSpec
from voxray.training.models import axis_divisors, build_model, check_model, model_constraints

SPEC = TypeAdapter(ModelSpec)
ANISO = {"name": "unet", "channels": [4, 8, 16, 16], "num_res_units": 1, "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2]]}


def test_per_axis_divisors_and_forward():
    spec = SPEC.validate_python(ANISO)
    assert axis_divisors(spec, 3) == (2, 8, 8)
    assert model_constraints(spec, 3, [6, 16, 24])["divisor"] == [2, 8, 8]
    assert check_model(spec, in_channels=1, out_channels=2, spatial_dims=3, patch=[6, 16, 24]) == []
    net = build_model(spec, in_channels=1, out_channels=2, spatial_dims=3, patch=[6, 16, 24])
    assert net(torch.zeros(1, 1, 6, 16, 24)).shape == (1, 2, 6, 16, 24)


def test_isotropic_default_unchanged():
    spec = SPEC.validate_python({"name": "unet", "channels": [4, 8, 16]})
    assert axis_divisors(spec, 3) == (4, 4, 4)
    assert model_constraints(spec, 3, [8, 8, 8])["divisor"] == 4


def test_bad_patch_names_the_per_axis_rule():
    spec = SPEC.validate_python(ANISO)
    (problem,) = check_model(spec, in_channels=1, out_channels=2, spatial_dims=3, patch=[6, 12, 24])
    assert "train.patch" in problem and "[2, 8, 8]" in problem and "[6, 16, 24]" in problem
    (problem,) = check_model(spec, in_channels=1, out_channels=2, spatial_dims=2, patch=[16, 16])
    assert "train.model.strides" in problem


@pytest.mark.parametrize("strides,match", [
    ([[1, 2, 2], [2, 2, 2]], "needs 3 entries"),
    ([[1, 2, 3], [2, 2, 2], [2, 2, 2]], "each 1 or 2"),
    ([[1, 2], [2, 2, 2], [2, 2, 2]], "equally long"),
])
def test_bad_strides_are_spec_errors(strides, match):
    with pytest.raises(ValidationError, match=match):
        SPEC.validate_python({**ANISO, "strides": strides})

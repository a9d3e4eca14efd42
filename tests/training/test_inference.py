"""Sliding-window inference: MONAI underneath, deep-supervision heads, 2D slice-wise over 3D volumes."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from voxray.training.inference import sliding_window_predict


class _DeepSup(nn.Module):
    """Conv net returning [full, half] like the Factorizer, so the first head must be picked."""

    def __init__(self, dims: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv(2, 3, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return [y, y[..., ::2, ::2]]


def test_matches_monai_directly_and_keeps_shape():
    torch.manual_seed(0)
    model = _DeepSup(3)
    image = torch.randn(2, 20, 17, 23)
    out = sliding_window_predict(model, image, [16, 16, 16], 0.5, device="cpu")
    ref = sliding_window_inference(image[None], [16, 16, 16], 1, lambda x: model(x)[0], overlap=0.5, mode="gaussian")
    assert out.shape == (3, 20, 17, 23)
    torch.testing.assert_close(out, ref[0], atol=1e-5, rtol=1e-5)


def test_smaller_than_patch_is_padded():
    out = sliding_window_predict(_DeepSup(3), torch.randn(2, 8, 9, 10), [16, 16, 16], 0.25)
    assert out.shape == (3, 8, 9, 10)


def test_2d_model_runs_slice_by_slice():
    torch.manual_seed(0)
    model = _DeepSup(2)
    image = torch.randn(2, 5, 12, 12)
    out = sliding_window_predict(model, image, [8, 8], 0.5, sw_batch_size=2)
    assert out.shape == (3, 5, 12, 12)
    one = sliding_window_predict(model, image[:, 3], [8, 8], 0.5)
    torch.testing.assert_close(out[:, 3], one, atol=1e-5, rtol=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="does not fit"):
        sliding_window_predict(_DeepSup(3), torch.randn(2, 8, 8), [4, 4, 4])

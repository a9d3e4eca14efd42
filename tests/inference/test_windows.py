"""The sliding-window engine: window count (progress/ETA), mirror TTA inside windows, member variance, autocast."""

from __future__ import annotations

import itertools

import pytest
import torch
from monai.inferers import sliding_window_inference
from torch import nn

from voxray.training.inference import (amp_dtype, autocast, count_windows, mirror_members, predict_windows,
                                       sliding_window_predict)


class Symmetric(nn.Module):
    """A 3×3×3 conv whose kernel is symmetric under every flip: flipping the input flips the output exactly."""

    def __init__(self, dims: int = 3) -> None:
        super().__init__()
        conv = nn.Conv3d if dims == 3 else nn.Conv2d
        self.conv = conv(2, 3, 3, padding=1)
        with torch.no_grad():
            w = self.conv.weight
            flips = [list(c) for r in range(dims + 1) for c in itertools.combinations(range(2, 2 + dims), r)]
            w.copy_(sum(w.flip(f) if f else w for f in flips) / len(flips))

    def forward(self, x):
        return self.conv(x)


class Lopsided(nn.Module):
    """A conv with a one-sided kernel: its output shifts when the input is flipped, so TTA changes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(2, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 2, 2, 2] = torch.randn(3, 2) * 3

    def forward(self, x):
        return [self.conv(x), self.conv(x)[..., ::2, ::2, ::2]]  # deep supervision: the first head counts


@pytest.mark.parametrize("shape,window,overlap", [((20, 17, 23), (8, 8, 8), 0.25), ((40, 9, 33), (16, 16, 16), 0.5),
                                                  ((16, 16, 16), (16, 16, 16), 0.5), ((5, 31), (8, 8), 0.7)])
def test_count_windows_matches_what_monai_visits(shape, window, overlap):
    seen = []

    def net(x):
        seen.append(x.shape[0])
        return x[:, :1]

    sliding_window_inference(torch.zeros(1, 1, *shape), list(window), 3, net, overlap=overlap)
    assert count_windows(shape, window, overlap) == sum(seen)


def test_mirror_members_are_every_subset():
    assert mirror_members([]) == [()]
    assert mirror_members([2, 0]) == [(), (0,), (2,), (0, 2)]
    assert len(mirror_members(range(3))) == 8


def test_tta_equals_plain_for_a_flip_equivariant_network():
    torch.manual_seed(0)
    model, image = Symmetric(), torch.randn(1, 2, 21, 18, 19)
    plain = predict_windows(model, image, (16, 16, 16), 0.5, batch=3, device="cpu")
    tta = predict_windows(model, image, (16, 16, 16), 0.5, batch=3, device="cpu", mirror=(0, 1, 2),
                          variance_task="labels")
    torch.testing.assert_close(tta.logits, plain.logits, atol=1e-5, rtol=1e-5)
    assert plain.variance is None and tta.variance is not None and float(tta.variance.max()) < 1e-6


def test_tta_averages_flipped_predictions_otherwise():
    """One window covering the volume: TTA is exactly the mean of the flipped-back member logits."""
    torch.manual_seed(0)
    model, image = Lopsided(), torch.randn(1, 2, 16, 16, 16)
    out = predict_windows(model, image, (16, 16, 16), 0.5, device="cpu", mirror=(0, 2), variance_task="labels")
    members = [model(image.flip([a + 2 for a in m]))[0].flip([a + 2 for a in m]) for m in mirror_members((0, 2))]
    with torch.no_grad():
        expected = torch.stack(members).mean(0)
        probs = torch.softmax(torch.stack(members), dim=2)
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.variance, probs.var(0, unbiased=False), atol=1e-5, rtol=1e-4)
    plain = predict_windows(model, image, (16, 16, 16), 0.5, device="cpu").logits
    assert (out.logits - plain).abs().max() > 0.1  # the lopsided kernel really disagrees with its mirror image
    assert float(out.variance.mean()) > 1e-3


def test_batched_images_match_one_at_a_time_and_2d_slices_take_tta():
    torch.manual_seed(0)
    model, images = Symmetric(), torch.randn(3, 2, 18, 20, 17)
    both = predict_windows(model, images, (16, 16, 16), 0.25, batch=4, device="cpu").logits
    for i in range(3):
        one = sliding_window_predict(model, images[i], (16, 16, 16), 0.25, device="cpu")
        torch.testing.assert_close(both[i], one, atol=1e-5, rtol=1e-5)
    flat = predict_windows(Symmetric(2), images[:1], (8, 8), 0.5, mirror=(0, 1), device="cpu")
    assert flat.logits.shape == (1, 3, 18, 20, 17)


def test_progress_reports_every_window_once():
    calls = []
    image = torch.randn(2, 2, 20, 17, 23)
    predict_windows(Symmetric(), image, (8, 8, 8), 0.25, batch=5, device="cpu", mirror=(0,),
                    progress=lambda done, total: calls.append((done, total)))
    total = 2 * count_windows((20, 17, 23), (8, 8, 8), 0.25)
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == -(-total // 5)


def test_autocast_is_one_rule_for_train_and_inference():
    assert amp_dtype("cpu", "auto") is None and amp_dtype("cpu", "bf16") is None  # CPU runs fp32
    assert amp_dtype("cuda", "auto") is torch.bfloat16 and amp_dtype("cuda", "fp16") is torch.float16
    assert amp_dtype("cuda", "fp32") is None
    with autocast(torch.device("cpu"), "bf16"):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32


def test_bad_shapes_and_axes_raise():
    with pytest.raises(ValueError, match="do not exist"):
        predict_windows(Symmetric(2), torch.randn(1, 2, 8, 8), (8, 8), mirror=(2,), device="cpu")
    with pytest.raises(ValueError, match="does not fit"):
        predict_windows(Symmetric(), torch.randn(1, 2, 8, 8), (4, 4, 4), device="cpu")

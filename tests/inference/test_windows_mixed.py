"""Cross-shape window batching: each image's logits (and TTA variance) equal `predict_windows` on that image alone,
while the windows of all images share forward passes."""

import pytest
import torch
from torch import nn

from voxray.training.inference import count_windows, predict_windows
from voxray.training.windows import predict_windows_mixed, window_plan


class Net(nn.Module):
    """A small conv net whose output depends on window content and position (no batch coupling)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1))
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(int(x.shape[0]))
        return self.conv(x)


SHAPES = [(2, 20, 17, 23), (2, 9, 30, 12), (2, 16, 16, 16), (2, 5, 6, 7)]  # one is smaller than the window


@pytest.mark.parametrize("mirror,variance", [((), None), ((0, 2), "brats_regions")])
def test_each_image_matches_its_own_sliding_window(mirror, variance):
    net = Net()
    images = [torch.randn(s, generator=torch.Generator().manual_seed(i)) for i, s in enumerate(SHAPES)]
    mixed = predict_windows_mixed(net, images, (8, 8, 8), 0.25, batch=5, device="cpu", mirror=mirror,
                                  variance_task=variance)
    for img, got in zip(images, mixed):
        want = predict_windows(net, img[None], (8, 8, 8), 0.25, batch=2, device="cpu", mirror=mirror,
                               variance_task=variance)
        assert got.logits.shape == (3, *img.shape[1:])
        torch.testing.assert_close(got.logits, want.logits[0], rtol=1e-5, atol=1e-5)
        if variance:
            torch.testing.assert_close(got.variance, want.variance[0], rtol=1e-5, atol=1e-6)
        else:
            assert got.variance is None


def test_windows_of_different_images_share_forward_passes():
    net = Net()
    images = [torch.randn(s) for s in SHAPES]
    progress = []
    predict_windows_mixed(net, images, (8, 8, 8), 0.5, batch=16, device="cpu",
                          progress=lambda d, t: progress.append((d, t)))
    total = sum(count_windows(s[1:], (8, 8, 8), 0.5) for s in SHAPES)
    assert sum(net.batches) == total and max(net.batches) == 16
    assert len(net.batches) == -(-total // 16)  # full batches across image boundaries
    assert progress[-1] == (total, total)


def test_plan_pads_like_monai_and_crops_back():
    plan = window_plan(torch.ones(1, 5, 20, 7), (8, 8, 8), 0.5)
    assert tuple(plan.x.shape) == (1, 1, 8, 20, 8)
    assert plan.crop == (slice(1, 6), slice(0, 20), slice(0, 7))  # MONAI puts the odd voxel after
    assert len(plan.slices) == count_windows((5, 20, 7), (8, 8, 8), 0.5)


def test_rejects_2d_windows_and_bad_mirror_axes():
    with pytest.raises(ValueError, match="3D window"):
        predict_windows_mixed(Net(), [torch.zeros(2, 8, 8)], (8, 8), batch=1)
    with pytest.raises(ValueError, match="mirror axes"):
        predict_windows_mixed(Net(), [torch.zeros(2, 8, 8, 8)], (8, 8, 8), mirror=(3,))


def test_predictor_batches_requests_of_different_shapes(tmp_path):
    from _infer_helpers import export_tiny

    from voxray.training.predict import Predictor, Request

    predictor = Predictor.from_registry(export_tiny(tmp_path / "reg", ["t1", "t2"]), device="cpu", batch=3)
    seen: list[int] = []
    predictor.model.register_forward_hook(lambda m, i, o: seen.append(int(i[0].shape[0])))
    images = [torch.randn(2, 20, 18, 22), torch.randn(2, 17, 25, 16), torch.randn(2, 20, 18, 22)]
    alone = [predictor.run([Request(img)])[0].logits for img in images]
    seen.clear()
    together = predictor.run([Request(img) for img in images])
    for a, b in zip(alone, together):
        torch.testing.assert_close(b.logits, a, rtol=1e-5, atol=1e-5)
    counts = [count_windows(img.shape[1:], predictor.settings.window, predictor.settings.overlap) for img in images]
    assert sum(seen) == sum(counts) and max(seen) == 3  # on the CPU passes keep the card's size …
    assert len(seen) == -(-sum(counts) // 3) < sum(-(-n // 3) for n in counts)  # … and span request boundaries

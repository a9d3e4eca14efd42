"""Swin Factorizer checks of reference/factorizer.md §10 (1–4, 6, 7, 11): counts, shapes, sizes, windows, dtypes."""

from __future__ import annotations

import pytest
import torch

from voxray.platform.specs.models import FactorizerSpec
from voxray.training.models import build_model
from voxray.training.models.factorizer import SwinFactorizer, matricize, sw_dematricize, sw_matricize
from voxray.training.models.profile import count_params, forward_profile

BRATS = dict(in_channels=4, out_channels=3, spatial_size=(128,) * 3)
ISLES = dict(in_channels=2, out_channels=1, spatial_size=(64,) * 3, head_dim=4, window=4, mlp_ratio=4)
SMALL = dict(widths=(4, 8, 8, 16), head_dim=4, window=2, dropout=0.0)  # divisor 2**3 * 2 = 16


def _meta(**kwargs) -> SwinFactorizer:
    with torch.device("meta"):
        return SwinFactorizer(**kwargs)


@pytest.mark.parametrize("kwargs, expected", [
    (BRATS, 5_855_241), (ISLES, 7_371_523), ({**ISLES, "mlp_ratio": 2}, 5_623_683)])
def test_parameter_counts_match_paper(kwargs, expected):
    assert count_params(_meta(**kwargs)) == expected


def test_brats_breakdown_and_buffers():
    net = _meta(**BRATS)
    assert sum(p.numel() for p in net.stem.parameters()) == 3_456
    assert sum(p.numel() for p in net.heads.parameters()) == 681
    enc = sum(p.numel() for m in (net.encoder, net.down) for p in m.parameters())
    dec = sum(p.numel() for m in (net.decoder, net.up) for p in m.parameters())
    assert (enc, dec) == (3_757_824, 2_093_280)
    buffers = dict(net.named_buffers())
    assert len(buffers) == 18 and sum(b.numel() for b in buffers.values()) == 4_680
    assert set(buffers) <= set(net.state_dict())


def test_registry_builds_the_brats_model():
    with torch.device("meta"):
        net = build_model(FactorizerSpec(), in_channels=4, out_channels=3, spatial_dims=3, patch=[128] * 3)
    assert count_params(net) == 5_855_241


@pytest.mark.parametrize("kwargs, shape, gflops", [(BRATS, (128,) * 3, 169.9), (ISLES, (64,) * 3, 28.5)])
def test_flops_match_paper(kwargs, shape, gflops):
    prof = forward_profile(_meta(**kwargs), kwargs["in_channels"], shape)
    assert prof["gflops"] == pytest.approx(gflops, rel=0.01)
    c = kwargs["out_channels"]
    assert prof["outputs"] == [[1, c, *shape], [1, c, *(s // 2 for s in shape)], [1, c, *(s // 4 for s in shape)]]


@pytest.mark.parametrize("train", [True, False])
def test_deep_supervision_shapes_3d(train):
    net = SwinFactorizer(in_channels=2, out_channels=3, spatial_size=(16, 32, 16), **SMALL).train(train)
    out = net(torch.rand(2, 2, 16, 32, 16))
    assert [tuple(o.shape) for o in out] == [(2, 3, 16, 32, 16), (2, 3, 8, 16, 8), (2, 3, 4, 8, 4)]


def test_2d_and_single_head():
    net = SwinFactorizer(spatial_dims=2, in_channels=1, out_channels=2, spatial_size=(32, 16), num_heads=1, **SMALL)
    out = net(torch.rand(3, 1, 32, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 2, 32, 16)


def test_no_pos_embed_accepts_any_multiple():
    net = SwinFactorizer(in_channels=1, out_channels=1, spatial_size=None, pos_embed=False, **SMALL).eval()
    assert net(torch.rand(1, 1, 16, 32, 48))[0].shape == (1, 1, 16, 32, 48)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*3 \\* window = 16"):
        net(torch.rand(1, 1, 16, 16, 24))


@pytest.mark.parametrize("size", [(48, 48, 48), (80, 80, 80), (64, 64, 48)])
def test_wrong_input_size_is_a_clear_error(size):
    net = _meta(**ISLES)
    with pytest.raises(ValueError, match=r"expects input spatial size \(64, 64, 64\).*divisible by 2\*\*4 \* window = 64"):
        net(torch.empty(1, 2, *size, device="meta"))


@pytest.mark.parametrize("kwargs, match", [
    (dict(spatial_size=(96,) * 3), "divisible by 2\\*\\*4 \\* window = 128"),
    (dict(widths=(32, 60, 128)), "divisible by head_dim"),
    (dict(spatial_dims=4), "spatial_dims"),
    (dict(spatial_size=None), "spatial_size is required"),
    (dict(num_heads=5), "num_heads")])
def test_invalid_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _meta(**{**BRATS, **kwargs})


def test_sw_matricize_layout_and_round_trip():
    x = torch.randn(2, 8, 4, 8, 4)  # B, (h d) with d=4, S divisible by p=2
    m = sw_matricize(x, head_dim=4, window=2)
    assert m.shape == (2 * 2 * 2, 2 * 4 * 2, 4, 8)  # (branches·B·h, windows, d, p³)
    assert torch.equal(sw_dematricize(m, x.shape, 4, 2), x)  # exact
    m0, m1 = m.chunk(2)
    assert torch.equal(m1, matricize(torch.roll(x, (1, 1, 1), (2, 3, 4)), 4, 2))
    # matrix (b=1, head 1, window (0,1,1)): rows = channels 4..7, columns = the 2³ voxels of that window, row-major
    window = x[1, 4:8, 0:2, 2:4, 2:4].reshape(4, 8)
    assert torch.equal(m0[1 * 2 + 1, 0 * 8 + 1 * 2 + 1], window)


def test_eval_forward_is_deterministic():
    torch.manual_seed(0)
    net = SwinFactorizer(in_channels=1, out_channels=1, spatial_size=(16,) * 3, **{**SMALL, "dropout": 0.1}).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    a, b = net(x), net(x)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.slow
def test_bf16_training_steps_are_finite():
    torch.manual_seed(0)
    net = SwinFactorizer(in_channels=2, out_channels=1, spatial_size=(16,) * 3, **SMALL)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x, y = torch.rand(1, 2, 16, 16, 16), (torch.rand(1, 1, 16, 16, 16) > 0.5).float()
    x[..., :8, :, :] = 0  # all-zero windows
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[0].float(), y)
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()

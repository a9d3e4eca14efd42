"""NMF layer checks of reference/factorizer.md §10.5: recovery, exact HALS recursion, gradients, dtypes."""

from __future__ import annotations

import pytest
import torch

from voxray.training.models.nmf import NMF


def _rank1(m: int = 8, n: int = 64, batch: tuple = (3,), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(*batch, m, 1, generator=g) + 0.1
    b = torch.rand(*batch, n, 1, generator=g) + 0.1
    return a @ b.transpose(-1, -2)


def test_rank1_input_is_recovered():
    x = _rank1()
    out = NMF((8, 64), rank=1, num_iters=5)(x)
    assert out.shape == x.shape
    assert (out - x).abs().max() < 1e-5


def test_hals_matches_hand_recursion_bit_exact():
    x, eps = torch.rand(2, 5, 8, 27), 1e-8
    nmf = NMF((8, 27), rank=1, num_iters=5)
    v = nmf.v0.expand(2, 5, 27, 1)
    for _ in range(5):
        u = torch.relu((x @ v + eps) / (v.transpose(-1, -2) @ v + eps))
        v = torch.relu((x.transpose(-1, -2) @ u + eps) / (u.transpose(-1, -2) @ u + eps))
    assert torch.equal(nmf(x), u @ v.transpose(-1, -2))


def test_gradient_flows_through_all_iterations():
    # A slowly converging input (two nearly equal components) so that every iteration matters.
    x = (torch.diag(torch.tensor([1.0, 0.95, 0.9, 0.85])) + 0.01).double()[None].requires_grad_(True)
    full = NMF((4, 4), num_iters=5).double()
    assert torch.autograd.gradcheck(full, (x,), eps=1e-6, atol=1e-5)
    last = NMF((4, 4), num_iters=5, num_grad_steps=1).double()
    last.load_state_dict(full.state_dict())
    g_full, = torch.autograd.grad(full(x).square().sum(), x)
    g_last, = torch.autograd.grad(last(x).square().sum(), x)
    assert g_full.abs().sum() > 0
    assert (g_full - g_last).abs().max() > 1e-3  # truncating the unrolled graph changes the gradient


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_all_zero_input_is_finite(dtype):
    out = NMF((8, 64))(torch.zeros(2, 8, 64, dtype=dtype))
    assert out.dtype == dtype and torch.isfinite(out).all() and out.abs().max() < 1e-6


def test_fp16_input_is_upcast_and_finite():
    x = torch.zeros(2, 8, 64, dtype=torch.float16)
    out = NMF((8, 64))(x)  # eps 1e-8 underflows in fp16; the solver runs in fp32
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = NMF((8, 64))(torch.rand(2, 8, 64))
    assert torch.isfinite(out).all()


def test_bf16_forward_backward_has_no_nan():
    x = torch.rand(3, 8, 64).to(torch.bfloat16).requires_grad_(True)
    x.data[0] = 0  # one all-zero matrix
    NMF((8, 64))(x).float().sum().backward()
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("solver, iters", [("hals", 30), ("mu", 200)])  # MU converges more slowly
def test_higher_rank_fits_better(solver, iters):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 8, 3, generator=g) @ torch.rand(4, 3, 32, generator=g)  # rank 3
    errs = [(NMF((8, 32), rank=r, num_iters=iters, solver=solver)(x) - x).norm() / x.norm() for r in (1, 3)]
    assert errs[1] < errs[0] * 0.5


def test_init_is_a_persistent_buffer_and_deterministic():
    nmf = NMF((4, 16), rank=2)
    assert set(nmf.state_dict()) == {"u0", "v0"} and not list(nmf.parameters())
    x = torch.rand(2, 4, 16)
    assert torch.equal(nmf(x), nmf(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=(0, 4)), "size"), (dict(size=(4, 4), rank=0), "rank"), (dict(size=(4, 4), solver="svd"), "solver"),
    (dict(size=(4, 4), num_iters=2, num_grad_steps=3), "num_grad_steps")])
def test_invalid_arguments(kwargs, match):
    size = kwargs.pop("size")
    with pytest.raises(ValueError, match=match):
        NMF(size, **kwargs)


def test_wrong_matrix_size_names_expected():
    with pytest.raises(ValueError, match=r"\(8, 64\)"):
        NMF((8, 64))(torch.rand(1, 8, 32))

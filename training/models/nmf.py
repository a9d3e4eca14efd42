"""Differentiable non-negative matrix factorisation by unrolled HALS or multiplicative updates.

The NMF "mixer" of the Factorizer (Ashtari et al., Medical Image Analysis 84, 2023) replaces attention: each
input matrix X (M × N, nonnegative) is approximated by U Vᵀ with rank R, and the reconstruction is the output.
The solver iterations are ordinary tensor ops, so autograd differentiates through all of them.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NMF", "hals_step", "mu_step"]

_SOLVERS = ("hals", "mu")


def _hals_update(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """New U for X ≈ U Vᵀ (V fixed): column-wise block coordinate descent with ReLU projection.

    Shapes: x (..., M, N), u (..., M, R), v (..., N, R) → (..., M, R).
    """
    a = x @ v  # ..., M, R
    b = v.transpose(-1, -2) @ v  # ..., R, R
    if u.shape[-1] == 1:  # rank 1 (the paper's setting): previous U is not used
        return torch.relu((a + eps) / (b + eps))
    cols = list(u.unbind(-1))
    for r in range(len(cols)):
        others = sum(cols[j] * b[..., j, r, None] for j in range(len(cols)) if j != r)
        cols[r] = torch.relu((a[..., r] - others + eps) / (b[..., r, r, None] + eps))
    return torch.stack(cols, dim=-1)


def hals_step(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """One HALS iteration, U first, then V (with the new U)."""
    u = _hals_update(x, u, v, eps)
    v = _hals_update(x.transpose(-1, -2), v, u, eps)
    return u, v


def _mu_update(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Lee–Seung multiplicative update of U: U ⊙ (X V) / (U VᵀV), with ε in numerator and denominator."""
    return (u * (x @ v) + eps) / (u @ (v.transpose(-1, -2) @ v) + eps)


def mu_step(x: torch.Tensor, u: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """One multiplicative-update iteration, U first, then V."""
    u = _mu_update(x, u, v, eps)
    v = _mu_update(x.transpose(-1, -2), v, u, eps)
    return u, v


class NMF(nn.Module):
    """Batched NMF layer returning the rank-R reconstruction U Vᵀ of every input matrix.

    Initial factors are drawn once from U[0, 1) at construction and kept as persistent buffers (in the
    state_dict, not trained), so the layer is deterministic. The solver always runs in float32 (or float64 for float64 input) with autocast
    disabled, because ε = 1e-8 underflows in fp16 (0/0 on all-zero windows); the result is cast back to the
    input dtype.

    Args:
        size: (M, N), rows and columns of each matrix.
        rank: R, the factorisation rank. Defaults to 1.
        num_iters: unrolled solver iterations. Defaults to 5.
        solver: ``"hals"`` (paper) or ``"mu"`` (multiplicative updates). Defaults to ``"hals"``.
        num_grad_steps: only the last k iterations are tracked by autograd; None tracks all (paper).
        eps: ε of the updates. Defaults to 1e-8.

    Examples::

        >>> nmf = NMF((8, 512), rank=1, num_iters=5)
        >>> nmf(torch.rand(2, 16, 8, 512)).shape
        torch.Size([2, 16, 8, 512])
    """

    def __init__(self, size: tuple[int, int], *, rank: int = 1, num_iters: int = 5, solver: str = "hals",
                 num_grad_steps: int | None = None, eps: float = 1e-8) -> None:
        super().__init__()
        m, n = size
        if m < 1 or n < 1:
            raise ValueError(f"NMF size must be positive (M, N), got {size}")
        if rank < 1 or num_iters < 0:
            raise ValueError(f"NMF rank must be >= 1 and num_iters >= 0, got rank={rank}, num_iters={num_iters}")
        if solver not in _SOLVERS:
            raise ValueError(f"NMF solver must be one of {_SOLVERS}, got {solver!r}")
        if num_grad_steps is not None and not 0 <= num_grad_steps <= num_iters:
            raise ValueError(f"num_grad_steps must be in [0, num_iters={num_iters}] or None, got {num_grad_steps}")
        self.size, self.rank, self.num_iters, self.solver, self.eps = (m, n), rank, num_iters, solver, eps
        self.num_grad_steps = num_iters if num_grad_steps is None else num_grad_steps
        self.register_buffer("u0", nn.init.uniform_(torch.empty(m, rank)))
        self.register_buffer("v0", nn.init.uniform_(torch.empty(n, rank)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., M, N), nonnegative → reconstruction (..., M, N) in x's dtype."""
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"NMF expects matrices of size {self.size}, got {tuple(x.shape[-2:])}")
        step = hals_step if self.solver == "hals" else mu_step
        device = x.device.type if x.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
        with torch.autocast(device_type=device, enabled=False):
            xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            batch = xf.shape[:-2]
            u = self.u0.to(xf.dtype).expand(*batch, *self.u0.shape)
            v = self.v0.to(xf.dtype).expand(*batch, *self.v0.shape)
            free = self.num_iters - self.num_grad_steps
            if free > 0:
                with torch.no_grad():
                    for _ in range(free):
                        u, v = step(xf, u, v, self.eps)
            for _ in range(self.num_grad_steps):
                u, v = step(xf, u, v, self.eps)
            out = u @ v.transpose(-1, -2)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"size={self.size}, rank={self.rank}, num_iters={self.num_iters}, solver={self.solver!r}, "
                f"num_grad_steps={self.num_grad_steps}")

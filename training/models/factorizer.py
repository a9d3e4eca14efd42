"""Swin Factorizer: a U-Net whose blocks mix context by windowed NMF instead of attention.

Ashtari et al., "Factorizer: A scalable interpretable approach to context modeling for medical image
segmentation", Medical Image Analysis 84 (2023) 102706, arXiv:2202.12295. Written from the specification in
`shared/reference/factorizer.md` (paper-era code, commit fa7f03d): 5,855,241 parameters for the BraTS setting.

Export status (torch 2.13, CPU; tests/models/test_models_factorizer_train.py):
- ``torch.jit.trace`` and ``torch.export.export`` work (eval mode, inputs of the configured size) and match eager.
- ``torch.compile`` works: dynamo captures the whole net in one graph (``fullgraph=True``) with backward
  (tested with the ``aot_eager`` backend); the default inductor backend also matches eager (max |Δ| 3e-7) but its
  first compile took 72–314 s on 2 busy cores, so it is not run in the test suite.
- ``torch.jit.script`` does not work (``ChannelLayerNorm`` calls ``super().forward``; keyword-only signatures and
  shape unpacking are outside TorchScript). TorchScript is deprecated upstream: use trace or export.
- ONNX (`voxray export --onnx`, training/onnx_export.py): the dynamo exporter works with a dynamic batch (max |Δ|
  logits ~1e-6 in onnxruntime); the TorchScript exporter fails (``movedim(-1, 1)`` becomes a Transpose with a
  negative perm that onnxruntime rejects).
"""

from __future__ import annotations

import torch
from torch import nn

from voxray.training.models.nmf import NMF

__all__ = ["sw_matricize", "sw_dematricize", "FactorizerSubblock", "FactorizerBlock", "SwinFactorizer",
           "build_factorizer"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def matricize(x: torch.Tensor, head_dim: int, window: int) -> torch.Tensor:
    """Split channels into heads and space into non-overlapping windows.

    x: (B, h·d, g₀p, g₁p[, g₂p]) → (B·h, g₀g₁[g₂], d, pⁿ): rows = the d channels of one head, columns = the
    voxels of one window (row-major); windows row-major.
    """
    b, c, *s = x.shape
    n, heads = len(s), c // head_dim
    grid = [d // window for d in s]
    shape = [b, heads, head_dim]
    for g in grid:
        shape += [g, window]
    x = x.reshape(shape)  # B h d g0 p0 g1 p1 [g2 p2]
    perm = [0, 1] + [3 + 2 * i for i in range(n)] + [2] + [4 + 2 * i for i in range(n)]
    x = x.permute(perm)  # B h g0 g1 [g2] d p0 p1 [p2]
    return x.reshape(b * heads, -1, head_dim, window**n)  # B·h G d P


def dematricize(m: torch.Tensor, shape: torch.Size, head_dim: int, window: int) -> torch.Tensor:
    """Inverse of `matricize` for an output of the given (B, C, *S) `shape`."""
    b, c, *s = shape
    n, heads = len(s), c // head_dim
    grid = [d // window for d in s]
    x = m.reshape([b, heads, *grid, head_dim] + [window] * n)  # B h g0 g1 [g2] d p0 p1 [p2]
    perm = [0, 1, 2 + n]
    for i in range(n):
        perm += [2 + i, 3 + n + i]
    return x.permute(perm).reshape(shape)  # B C *S


def sw_matricize(x: torch.Tensor, head_dim: int, window: int, shifted: bool = True) -> torch.Tensor:
    """Matricize x unshifted and (if `shifted`) cyclically rolled by +window//2 on every spatial dim.

    x: (B, C, *S) → (k·B·h, G, d, pⁿ) with k = 2 branches concatenated on dim 0 (unshifted first), k = 1 otherwise.
    """
    branches = [matricize(x, head_dim, window)]
    if shifted:
        dims = tuple(range(2, x.ndim))
        branches.append(matricize(torch.roll(x, shifts=(window // 2,) * len(dims), dims=dims), head_dim, window))
    return torch.cat(branches, dim=0)


def sw_dematricize(m: torch.Tensor, shape: torch.Size, head_dim: int, window: int, shifted: bool = True) -> torch.Tensor:
    """Inverse of `sw_matricize`: un-rearrange each branch, roll the shifted one back, average the branches."""
    if not shifted:
        return dematricize(m, shape, head_dim, window)
    half = m.shape[0] // 2  # slices, not chunk(): chunk's size rule pins the batch in torch.export (ONNX)
    m0, m1 = m[:half], m[half:]
    dims = tuple(range(2, len(shape)))
    x1 = torch.roll(dematricize(m1, shape, head_dim, window), shifts=(-(window // 2),) * len(dims), dims=dims)
    return (dematricize(m0, shape, head_dim, window) + x1) / 2


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel dim of (B, C, *S), independently at every voxel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


class FactorizerSubblock(nn.Module):
    """in_proj → shifted-window matricize → ReLU → NMF → inverse + average → out_proj → dropout.

    Args:
        spatial_dims: 2 or 3.
        channels: C, divisible by `head_dim`.
        head_dim: d, channels per head (matrix rows). Window: p, voxels per window edge (matrix columns pⁿ).
        rank, num_iters, solver, num_grad_steps: see `NMF`.
        shifted: add the +p/2 rolled branch (Swin). Defaults to True.
        dropout: after out_proj. Defaults to 0.1.
    """

    def __init__(self, spatial_dims: int, channels: int, *, head_dim: int = 8, window: int = 8, rank: int = 1,
                 num_iters: int = 5, solver: str = "hals", num_grad_steps: int | None = None, shifted: bool = True,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if channels % head_dim:
            raise ValueError(f"channels ({channels}) must be divisible by head_dim ({head_dim})")
        conv = _CONV[spatial_dims]
        self.head_dim, self.window, self.shifted = head_dim, window, shifted
        self.in_proj = conv(channels, channels, 1, bias=False)
        self.nmf = NMF((head_dim, window**spatial_dims), rank=rank, num_iters=num_iters, solver=solver,
                       num_grad_steps=num_grad_steps)
        self.out_proj = conv(channels, channels, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *S), every S divisible by the window → (B, C, *S)."""
        y = self.in_proj(x)
        m = torch.relu(sw_matricize(y, self.head_dim, self.window, self.shifted))  # k·B·h G d P
        y = sw_dematricize(self.nmf(m), y.shape, self.head_dim, self.window, self.shifted)
        return self.drop(self.out_proj(y))


class Mlp(nn.Module):
    """Pointwise MLP: C → ratio·C → GELU → dropout → C → dropout."""

    def __init__(self, spatial_dims: int, channels: int, ratio: int = 2, dropout: float = 0.1) -> None:
        super().__init__()
        conv = _CONV[spatial_dims]
        self.net = nn.Sequential(conv(channels, ratio * channels, 1), nn.GELU(), nn.Dropout(dropout),
                                 conv(ratio * channels, channels, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FactorizerBlock(nn.Module):
    """Pre-norm block: [adapter] → [+pos-embed, dropout] → x + NMF(LN(x)) → x + MLP(LN(x)).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: a pointwise no-bias adapter (+ dropout) maps in → out when they differ.
        pos_embed_size: spatial size of a learnable N(0, 1) positional embedding, or None (no embedding).
        mlp_ratio: MLP hidden width ratio. Defaults to 2.
        dropout: everywhere in the block. Defaults to 0.1.
        **nmf: keyword arguments of `FactorizerSubblock` (head_dim, window, rank, num_iters, solver, …).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, *, pos_embed_size: tuple | None = None,
                 mlp_ratio: int = 2, dropout: float = 0.1, **nmf) -> None:
        super().__init__()
        self.adapter = None
        if in_channels != out_channels:
            self.adapter = nn.Sequential(_CONV[spatial_dims](in_channels, out_channels, 1, bias=False),
                                         nn.Dropout(dropout))
        self.pos_embed = None
        if pos_embed_size is not None:
            self.pos_embed = nn.Parameter(torch.randn(1, out_channels, *pos_embed_size))
            self.pos_drop = nn.Dropout(dropout)
        self.norm1 = ChannelLayerNorm(out_channels)
        self.mixer = FactorizerSubblock(spatial_dims, out_channels, dropout=dropout, **nmf)
        self.norm2 = ChannelLayerNorm(out_channels)
        self.mlp = Mlp(spatial_dims, out_channels, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapter is not None:
            x = self.adapter(x)
        if self.pos_embed is not None:
            x = self.pos_drop(x + self.pos_embed)
        x = x + self.mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _stage(spatial_dims: int, in_ch: int, out_ch: int, blocks: int, pos_embed_size: tuple | None,
           **kwargs) -> nn.Sequential:
    """`blocks` Factorizer blocks; the first adapts in → out channels and carries the positional embedding."""
    layers = [FactorizerBlock(spatial_dims, in_ch, out_ch, pos_embed_size=pos_embed_size, **kwargs)]
    layers += [FactorizerBlock(spatial_dims, out_ch, out_ch, **kwargs) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class SwinFactorizer(nn.Module):
    """Swin Factorizer U-Net (Ashtari et al., Medical Image Analysis 2023) with deep supervision.

    stem conv3 → [Factorizer stage] at full resolution → L-1 × (conv k2 s2 downsample → stage), positional
    embedding at the bottleneck → L-1 × (transposed conv k2 s2 → concat [skip, up] → stage) → 1×1 heads on the
    top `num_heads` decoder levels. Outputs are raw logits.

    Args:
        spatial_dims: 2 or 3. Defaults to 3.
        in_channels: input channels. Defaults to 4.
        out_channels: output channels (sigmoid per channel in the paper). Defaults to 3.
        spatial_size: input size; required with `pos_embed` (it fixes the bottleneck size). Defaults to 128³.
        widths: channels per level. Defaults to (32, 64, 128, 256, 512).
        blocks: Factorizer blocks per stage. Defaults to 1.
        head_dim: channels per NMF head. Defaults to 8.
        window: NMF window edge. Defaults to 8.
        rank: NMF rank. Defaults to 1.
        num_iters: NMF iterations. Defaults to 5.
        solver: "hals" or "mu". Defaults to "hals".
        num_grad_steps: NMF iterations tracked by autograd (None = all). Defaults to None.
        shifted: shifted-window branch; False gives the Local Factorizer. Defaults to True.
        mlp_ratio: MLP ratio (BraTS 2, ISLES 4). Defaults to 2.
        dropout: dropout rate. Defaults to 0.1.
        pos_embed: learnable positional embedding at the bottleneck. Defaults to True.
        num_heads: deep-supervision heads (1 = a single tensor output). Defaults to 3.

    Examples::

        # BraTS (5,855,241 parameters)
        >>> net = SwinFactorizer(in_channels=4, out_channels=3, spatial_size=(128, 128, 128))
        # ISLES 2022 (7,371,523 parameters)
        >>> net = SwinFactorizer(in_channels=2, out_channels=1, spatial_size=(64,) * 3, head_dim=4, window=4,
        ...                      mlp_ratio=4)
    """

    def __init__(self, *, spatial_dims: int = 3, in_channels: int = 4, out_channels: int = 3,
                 spatial_size: tuple[int, ...] | None = (128, 128, 128),
                 widths: tuple[int, ...] = (32, 64, 128, 256, 512), blocks: int = 1, head_dim: int = 8,
                 window: int = 8, rank: int = 1, num_iters: int = 5, solver: str = "hals",
                 num_grad_steps: int | None = None, shifted: bool = True, mlp_ratio: int = 2, dropout: float = 0.1,
                 pos_embed: bool = True, num_heads: int = 3) -> None:
        super().__init__()
        self._check_args(spatial_dims, in_channels, out_channels, spatial_size, widths, blocks, head_dim, window,
                         pos_embed, num_heads)
        self.spatial_dims, self.window, self.levels = spatial_dims, window, len(widths)
        self.spatial_size = tuple(spatial_size) if spatial_size is not None else None
        self.divisor = 2 ** (len(widths) - 1) * window
        conv, convt = _CONV[spatial_dims], _CONVT[spatial_dims]
        kw = dict(head_dim=head_dim, window=window, rank=rank, num_iters=num_iters, solver=solver,
                  num_grad_steps=num_grad_steps, shifted=shifted, mlp_ratio=mlp_ratio, dropout=dropout)
        bottom = tuple(s // 2 ** (len(widths) - 1) for s in spatial_size) if pos_embed else None
        self.stem = conv(in_channels, widths[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList(conv(widths[i - 1], widths[i], 2, stride=2, bias=False) for i in range(1, len(widths)))
        self.encoder = nn.ModuleList(
            _stage(spatial_dims, w, w, blocks, bottom if i == len(widths) - 1 else None, **kw)
            for i, w in enumerate(widths))
        self.up = nn.ModuleList(convt(widths[i + 1], widths[i], 2, stride=2) for i in range(len(widths) - 1))
        self.decoder = nn.ModuleList(_stage(spatial_dims, 2 * w, w, blocks, None, **kw) for w in widths[:-1])
        self.heads = nn.ModuleList(conv(widths[i], out_channels, 1) for i in range(num_heads))

    @staticmethod
    def _check_args(spatial_dims, in_channels, out_channels, spatial_size, widths, blocks, head_dim, window,
                    pos_embed, num_heads) -> None:
        if spatial_dims not in _CONV:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
        if len(widths) < 2 or blocks < 1 or window < 1:
            raise ValueError(f"need >= 2 widths, blocks >= 1 and window >= 1, got {widths}, {blocks}, {window}")
        if any(w % head_dim for w in widths):
            raise ValueError(f"every width must be divisible by head_dim={head_dim}, got widths {list(widths)}")
        if not 1 <= num_heads < len(widths):
            raise ValueError(f"num_heads must be in [1, {len(widths) - 1}] for {len(widths)} levels, got {num_heads}")
        divisor = 2 ** (len(widths) - 1) * window
        if pos_embed and spatial_size is None:
            raise ValueError("spatial_size is required when pos_embed=True (the embedding fixes the input size)")
        if spatial_size is not None and (len(spatial_size) != spatial_dims or any(s % divisor for s in spatial_size)):
            raise ValueError(f"spatial_size must have {spatial_dims} dims, each divisible by "
                             f"2**{len(widths) - 1} * window = {divisor}, got {tuple(spatial_size)}")

    def _check_input(self, x: torch.Tensor) -> None:
        size = tuple(x.shape[2:])
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"SwinFactorizer expects a (B, C, *S) input with {self.spatial_dims} spatial dims, "
                             f"got shape {tuple(x.shape)}")
        rule = f"every dim divisible by 2**{self.levels - 1} * window = {self.divisor}"
        if self.encoder[-1][0].pos_embed is not None and size != self.spatial_size:
            raise ValueError(f"SwinFactorizer expects input spatial size {self.spatial_size} (fixed by the "
                             f"positional embedding; {rule}), got {size}")
        if any(s % self.divisor for s in size):
            raise ValueError(f"SwinFactorizer input spatial size {size} is invalid: {rule}")

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """x: (B, in_channels, *spatial_size) → [(B, out, *S), (B, out, *S/2), (B, out, *S/4)] logits
        (a single tensor when num_heads == 1). Raises ValueError for any other spatial size."""
        self._check_input(x)
        skips = []
        x = self.encoder[0](self.stem(x))
        for down, stage in zip(self.down, self.encoder[1:]):
            skips.append(x)
            x = stage(down(x))
        outs = []
        for level in range(self.levels - 2, -1, -1):
            x = self.decoder[level](torch.cat([skips[level], self.up[level](x)], dim=1))
            if level < len(self.heads):
                outs.append(self.heads[level](x))
        outs.reverse()  # full resolution first
        return outs if len(outs) > 1 else outs[0]

    def no_weight_decay(self) -> set[str]:
        """Parameter names one may exclude from weight decay (the paper applies decay to all of them)."""
        return {n for n, _ in self.named_parameters() if n.endswith("pos_embed")}


def build_factorizer(spec, *, in_channels: int, out_channels: int, spatial_dims: int,
                     patch: tuple[int, ...]) -> SwinFactorizer:
    """Registry builder: a `FactorizerSpec` + channels + `train.patch` (the positional embedding's size)."""
    return SwinFactorizer(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                          spatial_size=tuple(patch), widths=tuple(spec.widths), blocks=spec.blocks,
                          head_dim=spec.head_dim, window=spec.window, rank=spec.rank, num_iters=spec.iters,
                          solver=spec.solver, num_grad_steps=spec.grad_iters, shifted=spec.shifted,
                          mlp_ratio=spec.mlp_ratio, dropout=spec.dropout, pos_embed=spec.pos_embed,
                          num_heads=3 if spec.deep_supervision else 1)

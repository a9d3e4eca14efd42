"""U-Net with a configurable number of resolution levels (Ronneberger et al., MICCAI 2015).

MONAI's BasicUNet fixes five levels; the 2D seeds sweep the depth, so this small U-Net takes it as an argument.
Conv–norm–act units come from MONAI's `Convolution` block.
"""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["UNetDepth", "build_unet_depth"]


def _double_conv(spatial_dims: int, in_ch: int, out_ch: int, dropout: float = 0.0) -> nn.Sequential:
    """Two 3×3 conv → BatchNorm → ReLU units (dropout after the second)."""
    return nn.Sequential(
        Convolution(spatial_dims, in_ch, out_ch, act="RELU", norm="BATCH", bias=False),
        Convolution(spatial_dims, out_ch, out_ch, act="RELU", norm="BATCH", bias=False, dropout=dropout or None))


class UNetDepth(nn.Module):
    """U-Net with `depth` resolution levels, channels doubling per level, skip concatenation.

    Args:
        spatial_dims: 2 or 3. Defaults to 2.
        in_channels: input channels. Defaults to 1.
        out_channels: output channels (logits). Defaults to 1.
        depth: resolution levels; depth - 1 max-poolings, so inputs must be divisible by 2**(depth-1). Defaults to 4.
        base_channels: channels at the first level (level i has base·2**i). Defaults to 32.
        dropout: dropout of the bottleneck convolution. Defaults to 0.0.

    Examples::

        >>> net = UNetDepth(in_channels=3, out_channels=1, depth=5)
        >>> net(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, *, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, depth: int = 4,
                 base_channels: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if depth < 1 or base_channels < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(f"depth, base_channels and channels must be >= 1, got depth={depth}, "
                             f"base_channels={base_channels}, in/out={in_channels}/{out_channels}")
        widths = [base_channels * 2**i for i in range(depth)]
        self.depth, self.divisor = depth, 2 ** (depth - 1)
        pool = nn.MaxPool2d if spatial_dims == 2 else nn.MaxPool3d
        convt = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.encoder = nn.ModuleList(
            _double_conv(spatial_dims, in_channels if i == 0 else widths[i - 1], w, dropout if i == depth - 1 else 0)
            for i, w in enumerate(widths))
        self.pool = pool(2)
        self.up = nn.ModuleList(convt(widths[i + 1], widths[i], 2, stride=2) for i in range(depth - 1))
        self.decoder = nn.ModuleList(_double_conv(spatial_dims, 2 * w, w) for w in widths[:-1])
        self.head = Convolution(spatial_dims, widths[0], out_channels, kernel_size=1, conv_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *S), every S divisible by 2**(depth-1) → logits (B, out_channels, *S)."""
        if any(s % self.divisor for s in x.shape[2:]):
            raise ValueError(f"UNetDepth(depth={self.depth}) needs every spatial dim divisible by "
                             f"2**(depth-1) = {self.divisor}, got {tuple(x.shape[2:])}")
        skips = []
        for i, enc in enumerate(self.encoder):
            x = enc(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for level in range(self.depth - 2, -1, -1):
            x = self.decoder[level](torch.cat([skips[level], self.up[level](x)], dim=1))
        return self.head(x)


def build_unet_depth(spec, *, in_channels: int, out_channels: int, spatial_dims: int,
                     patch: tuple[int, ...]) -> UNetDepth:
    """Registry builder for a `UNetDepthSpec`."""
    return UNetDepth(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                     depth=spec.depth, base_channels=spec.base_channels, dropout=spec.dropout)

"""DeepLabV3+ (Chen et al., "Encoder-Decoder with Atrous Separable Convolution", ECCV 2018) on a MONAI ResNet.

There is no CPU torchvision here, so the encoder is MONAI's ResNet (random init) and the ASPP + decoder are built
from MONAI `Convolution` units. The encoder has output stride 32 (MONAI's ResNet has no dilated stages), the
low-level features come from `layer1` (stride 4), as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["ASPP", "DeepLabV3Plus", "build_deeplabv3plus"]


def _cbr(spatial_dims: int, in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> Convolution:
    """conv → BatchNorm → ReLU."""
    return Convolution(spatial_dims, in_ch, out_ch, kernel_size=kernel, dilation=dilation, act="RELU", norm="BATCH",
                       bias=False, padding=dilation * (kernel // 2))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, dilated 3×3 per rate and image pooling, concatenated and projected."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, rates: tuple[int, ...],
                 dropout: float = 0.1) -> None:
        super().__init__()
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.branches = nn.ModuleList([_cbr(spatial_dims, in_channels, channels)] +
                                      [_cbr(spatial_dims, in_channels, channels, 3, r) for r in rates])
        self.image_pool = nn.Sequential(pool(1), Convolution(spatial_dims, in_channels, channels, kernel_size=1,
                                                             act="RELU", norm=None, bias=False))
        self.project = nn.Sequential(_cbr(spatial_dims, channels * (len(rates) + 2), channels), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(x).expand(-1, -1, *x.shape[2:])
        return self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for 2D (or 3D) segmentation on a MONAI ResNet encoder.

    Args:
        spatial_dims: 2 or 3. Defaults to 2.
        in_channels: input channels. Defaults to 1.
        out_channels: output channels (logits). Defaults to 1.
        backbone: "resnet18", "resnet34" or "resnet50" (MONAI, random init). Defaults to "resnet18".
        aspp_rates: dilation rates of the 3×3 ASPP branches. Defaults to (6, 12, 18).
        aspp_channels: ASPP and decoder channels. Defaults to 256.
        low_level_channels: channels of the reduced layer1 features. Defaults to 48.

    Examples::

        >>> net = DeepLabV3Plus(in_channels=3, out_channels=2)
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 2, 128, 128])
    """

    def __init__(self, *, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1,
                 backbone: str = "resnet18", aspp_rates: tuple[int, ...] = (6, 12, 18), aspp_channels: int = 256,
                 low_level_channels: int = 48) -> None:
        super().__init__()
        from monai.networks.nets import resnet

        if backbone not in ("resnet18", "resnet34", "resnet50"):
            raise ValueError(f"backbone must be resnet18, resnet34 or resnet50, got {backbone!r}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.encoder = getattr(resnet, backbone)(spatial_dims=spatial_dims, n_input_channels=in_channels,
                                                 conv1_t_stride=2, feed_forward=False)
        expansion = type(self.encoder.layer1[0]).expansion
        self.aspp = ASPP(spatial_dims, 512 * expansion, aspp_channels, tuple(aspp_rates))
        self.reduce = _cbr(spatial_dims, 64 * expansion, low_level_channels)
        self.decoder = nn.Sequential(_cbr(spatial_dims, aspp_channels + low_level_channels, aspp_channels, 3),
                                     _cbr(spatial_dims, aspp_channels, aspp_channels, 3))
        self.head = Convolution(spatial_dims, aspp_channels, out_channels, kernel_size=1, conv_only=True)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, *S), every S divisible by 32 → logits (B, out_channels, *S)."""
        if any(s % 32 for s in x.shape[2:]):
            raise ValueError(f"DeepLabV3Plus needs every spatial dim divisible by 32 (encoder output stride), "
                             f"got {tuple(x.shape[2:])}")
        size, enc = x.shape[2:], self.encoder
        low = enc.layer1(enc.maxpool(enc.act(enc.bn1(enc.conv1(x)))))  # B 64e S/4
        high = self.aspp(enc.layer4(enc.layer3(enc.layer2(low))))  # B A S/32
        high = F.interpolate(high, size=low.shape[2:], mode=self.mode, align_corners=False)
        y = self.decoder(torch.cat([self.reduce(low), high], dim=1))
        return F.interpolate(self.head(y), size=size, mode=self.mode, align_corners=False)


def build_deeplabv3plus(spec, *, in_channels: int, out_channels: int, spatial_dims: int,
                        patch: tuple[int, ...]) -> DeepLabV3Plus:
    """Registry builder for a `DeepLabV3PlusSpec`."""
    return DeepLabV3Plus(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                         backbone=spec.backbone, aspp_rates=tuple(spec.aspp_rates), aspp_channels=spec.aspp_channels)

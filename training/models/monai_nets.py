"""Builders for the MONAI networks of the zoo: UNet, SegResNet, UNETR, SwinUNETR, FlexibleUNet-EfficientNet.

Each builder maps a spec from `voxray.platform.specs.models` onto the MONAI constructor; MONAI is imported inside
the builder so that importing the registry stays cheap. Arguments were already validated by
`voxray.training.models.build_model` (dims, divisibility, channels).
"""

from __future__ import annotations

from torch import nn

from voxray.platform.specs.models import (EfficientNetUNetSpec, MonaiUNetSpec, SegResNetSpec, SwinUNETRSpec,
                                          UNETRSpec)

__all__ = ["build_unet", "build_segresnet", "build_unetr", "build_swinunetr", "build_efficientnet_unet"]


def build_unet(spec: MonaiUNetSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
               patch: tuple[int, ...]) -> nn.Module:
    """MONAI residual UNet (Kerfoot et al. 2018): stride-2 convolutions between the `spec.channels` levels."""
    from monai.networks.nets import UNet

    strides = (2,) * (len(spec.channels) - 1) if spec.strides is None else tuple(tuple(s) for s in spec.strides)
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels,
                channels=tuple(spec.channels), strides=strides,
                num_res_units=spec.num_res_units, dropout=spec.dropout)


def build_segresnet(spec: SegResNetSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                    patch: tuple[int, ...]) -> nn.Module:
    """MONAI SegResNet (Myronenko 2018) without the VAE branch."""
    from monai.networks.nets import SegResNet

    return SegResNet(spatial_dims=spatial_dims, init_filters=spec.init_filters, in_channels=in_channels,
                     out_channels=out_channels, dropout_prob=spec.dropout or None,
                     blocks_down=tuple(spec.blocks_down), blocks_up=(1,) * (len(spec.blocks_down) - 1))


def build_unetr(spec: UNETRSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                patch: tuple[int, ...]) -> nn.Module:
    """MONAI UNETR (Hatamizadeh et al. 2022); the ViT position embedding fixes the input size to `patch`."""
    from monai.networks.nets import UNETR

    return UNETR(in_channels=in_channels, out_channels=out_channels, img_size=tuple(patch),
                 feature_size=spec.feature_size, hidden_size=spec.hidden_size, mlp_dim=spec.mlp_dim,
                 num_heads=spec.num_heads, dropout_rate=spec.dropout, spatial_dims=spatial_dims)


def build_swinunetr(spec: SwinUNETRSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                    patch: tuple[int, ...]) -> nn.Module:
    """MONAI SwinUNETR (Hatamizadeh et al. 2022); any input size divisible by 32."""
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, depths=tuple(spec.depths),
                     num_heads=tuple(spec.num_heads), window_size=spec.window, feature_size=spec.feature_size,
                     drop_rate=spec.dropout, spatial_dims=spatial_dims)


def build_efficientnet_unet(spec: EfficientNetUNetSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                            patch: tuple[int, ...]) -> nn.Module:
    """MONAI FlexibleUNet with an EfficientNet encoder; `pretrained=False` always (nothing is downloaded)."""
    from monai.networks.nets import FlexibleUNet

    return FlexibleUNet(in_channels=in_channels, out_channels=out_channels, backbone=spec.backbone,
                        pretrained=False, decoder_channels=tuple(spec.decoder_channels), spatial_dims=spatial_dims,
                        dropout=spec.dropout)

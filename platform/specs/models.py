"""The `train.model` section: one spec class per registry name, a union discriminated by `name`.

Builders in `voxray.training.models` take these objects; channel counts come from the store and task, and the
input size from `train.patch`, not from here. Pure pydantic: importing this module never imports torch.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, ValidationInfo, field_validator, model_validator

from voxray.platform.specs.common import StrictModel


def _check_list(values: list[int], field: str, *, min_len: int = 1) -> None:
    if len(values) < min_len or any(v < 1 for v in values):
        raise ValueError(f"{field} {values} must hold at least {min_len} positive integers")


class FactorizerSpec(StrictModel):
    name: Literal["swin_factorizer", "factorizer"] = "swin_factorizer"
    """Swin Factorizer (Ashtari et al. 2023); `factorizer` is an alias. 3D (BraTS) or 2D."""
    widths: list[int] = [32, 64, 128, 256, 512]
    """Channels per level (encoder); the decoder mirrors them. Each must be divisible by `head_dim`."""
    blocks: int = Field(default=1, ge=1)
    """Factorizer blocks per stage."""
    window: int = Field(default=8, ge=2)
    """Window edge for the windowed NMF (BraTS 8, ISLES 4); the patch must be divisible by 2**(levels-1)*window."""
    head_dim: int = Field(default=8, ge=1)
    """Channels per NMF head (matrix rows); BraTS 8, ISLES 4."""
    rank: int = Field(default=1, ge=1)
    """NMF rank (paper: 1)."""
    iters: int = Field(default=5, ge=0)
    """Unrolled NMF iterations (paper: 5)."""
    grad_iters: int | None = Field(default=None, ge=0)
    """NMF iterations tracked by autograd (the last k); null = all (paper)."""
    solver: Literal["hals", "mu"] = "hals"
    """NMF solver: HALS (paper) or multiplicative updates."""
    mlp_ratio: int = Field(default=2, ge=1)
    """MLP hidden-width ratio (BraTS 2, ISLES 4)."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout rate."""
    shifted: bool = True
    """Shifted-window branch (Swin Factorizer); false = Local Factorizer (plain windows)."""
    pos_embed: bool = True
    """Learnable positional embedding at the bottleneck; it fixes the input size to `train.patch`."""
    deep_supervision: bool = True
    """Return the list [full, 1/2, 1/4] of logits (train and eval); false = one full-resolution output."""

    @field_validator("widths")
    @classmethod
    def _two_levels(cls, v: list[int]) -> list[int]:
        _check_list(v, "widths", min_len=2)
        return v

    @field_validator("head_dim")
    @classmethod
    def _widths_match_heads(cls, v: int, info: ValidationInfo) -> int:
        bad = [w for w in info.data.get("widths", []) if w % v]
        if bad:
            raise ValueError(f"widths {bad} are not divisible by head_dim={v} (e.g. widths: [32, 64, 128, 256])")
        return v

    @field_validator("grad_iters")
    @classmethod
    def _grad_iters(cls, v: int | None, info: ValidationInfo) -> int | None:
        iters = info.data.get("iters")
        if v is not None and iters is not None and v > iters:
            raise ValueError(f"grad_iters={v} must not exceed iters={iters}")
        return v

    @field_validator("deep_supervision")
    @classmethod
    def _enough_levels(cls, v: bool, info: ValidationInfo) -> bool:
        widths = info.data.get("widths")
        if v and widths is not None and len(widths) < 4:
            raise ValueError(f"deep supervision needs >= 4 levels for its 3 heads, got widths {widths} "
                             "(set deep_supervision: false or add levels)")
        return v


class MonaiUNetSpec(StrictModel):
    name: Literal["unet"] = "unet"
    """MONAI UNet (residual units); 2D or 3D from `train.patch`; patch divisible by 2**(levels-1)."""
    channels: list[int] = [16, 32, 64, 128, 256]
    """Channels per level (>= 2 levels); each level after the first halves the resolution."""
    num_res_units: int = Field(default=2, ge=0)
    """Residual units per level."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""
    strides: list[list[int]] | None = None
    """Per-axis downsampling strides, one [z, y, x] (2D: [y, x]) of 1s and 2s per level after the first, so thick-slice
    data pools in plane first (nnU-Net); the patch must be divisible by each axis's product. null = 2 on every axis."""

    @model_validator(mode="after")
    def _levels(self) -> "MonaiUNetSpec":
        _check_list(self.channels, "channels", min_len=2)
        if self.strides is not None:
            if len(self.strides) != len(self.channels) - 1:
                raise ValueError(f"strides needs {len(self.channels) - 1} entries (one per level after the first), "
                                 f"got {len(self.strides)}")
            if len({len(s) for s in self.strides}) != 1 or any(len(s) not in (2, 3) or set(s) - {1, 2}
                                                               for s in self.strides):
                raise ValueError(f"strides {self.strides} must be lists of 2 or 3 values, each 1 or 2, all equally long")
        return self


class SegResNetSpec(StrictModel):
    name: Literal["segresnet"] = "segresnet"
    """MONAI SegResNet (Myronenko 2018); 2D or 3D; patch divisible by 2**(stages-1)."""
    init_filters: int = Field(default=16, ge=1)
    """Filters of the first stage (GroupNorm(8) needs a multiple of 8)."""
    blocks_down: list[int] = [1, 2, 2, 4]
    """Residual blocks per encoder stage; the decoder has one block per upsampling."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""

    @model_validator(mode="after")
    def _groups(self) -> "SegResNetSpec":
        _check_list(self.blocks_down, "blocks_down")
        if self.init_filters % 8:
            raise ValueError(f"init_filters={self.init_filters} must be a multiple of 8 (GroupNorm with 8 groups)")
        return self


class UNETRSpec(StrictModel):
    name: Literal["unetr"] = "unetr"
    """MONAI UNETR (ViT encoder, 16-voxel patches); its input size is fixed to `train.patch`."""
    feature_size: int = Field(default=16, ge=1)
    """Decoder feature size."""
    hidden_size: int = Field(default=768, ge=1)
    """ViT embedding size (divisible by num_heads)."""
    mlp_dim: int = Field(default=3072, ge=1)
    """ViT MLP width."""
    num_heads: int = Field(default=12, ge=1)
    """ViT attention heads."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""

    @model_validator(mode="after")
    def _heads(self) -> "UNETRSpec":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        return self


class SwinUNETRSpec(StrictModel):
    name: Literal["swinunetr"] = "swinunetr"
    """MONAI SwinUNETR (Hatamizadeh et al. 2022); 2D or 3D; patch divisible by 32."""
    feature_size: int = Field(default=24, ge=12)
    """Embedding size (multiple of 12)."""
    depths: list[int] = [2, 2, 2, 2]
    """Swin blocks per stage (4 stages)."""
    num_heads: list[int] = [3, 6, 12, 24]
    """Attention heads per stage."""
    window: int = Field(default=7, ge=1)
    """Attention window edge."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""

    @model_validator(mode="after")
    def _stages(self) -> "SwinUNETRSpec":
        if self.feature_size % 12:
            raise ValueError(f"feature_size={self.feature_size} must be a multiple of 12 (e.g. 12, 24, 48)")
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must each list 4 stages")
        _check_list(self.depths, "depths")
        _check_list(self.num_heads, "num_heads")
        return self


class EfficientNetUNetSpec(StrictModel):
    name: Literal["efficientnet_unet"] = "efficientnet_unet"
    """MONAI FlexibleUNet with an EfficientNet encoder, randomly initialised (no download); 2D; patch divisible by 32."""
    backbone: Literal["efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3"] = "efficientnet-b0"
    """EfficientNet variant of the encoder."""
    decoder_channels: list[int] = [256, 128, 64, 32, 16]
    """Decoder channels, one per upsampling (5)."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Decoder dropout rate."""

    @model_validator(mode="after")
    def _decoder(self) -> "EfficientNetUNetSpec":
        if len(self.decoder_channels) != 5:
            raise ValueError(f"decoder_channels {self.decoder_channels} must list 5 values (one per upsampling)")
        _check_list(self.decoder_channels, "decoder_channels")
        return self


class UNetDepthSpec(StrictModel):
    name: Literal["unet_depth"] = "unet_depth"
    """2D U-Net whose number of resolution levels is `depth`; patch divisible by 2**(depth-1)."""
    depth: int = Field(default=4, ge=1, le=7)
    """Resolution levels (depth-1 poolings); 1 = no downsampling."""
    base_channels: int = Field(default=32, ge=1)
    """Channels at the first level; doubled at every level."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate at the bottleneck."""


class DeepLabV3PlusSpec(StrictModel):
    name: Literal["deeplabv3plus"] = "deeplabv3plus"
    """DeepLabV3+ (ASPP + decoder, Chen et al. 2018) on a MONAI ResNet encoder; 2D; patch divisible by 32."""
    backbone: Literal["resnet18", "resnet34", "resnet50"] = "resnet18"
    """MONAI ResNet encoder (random init)."""
    aspp_rates: list[int] = [6, 12, 18]
    """Dilation rates of the 3×3 ASPP branches (at output stride 32 smaller rates, e.g. [1, 2, 3], also fit)."""
    aspp_channels: int = Field(default=256, ge=1)
    """Channels of each ASPP branch and of the decoder."""

    @model_validator(mode="after")
    def _rates(self) -> "DeepLabV3PlusSpec":
        _check_list(self.aspp_rates, "aspp_rates")
        return self


ModelSpec = Annotated[
    Union[FactorizerSpec, MonaiUNetSpec, SegResNetSpec, UNETRSpec, SwinUNETRSpec, EfficientNetUNetSpec,
          UNetDepthSpec, DeepLabV3PlusSpec],
    Discriminator("name"),
]
"""A model by registry name; `voxray models` lists them."""

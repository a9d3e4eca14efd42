"""The `train.model` section: one spec class per registry name, a union discriminated by `name`.

Builders in `voxray.training.models` take these objects; channel counts come from the store and task, not here.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field

from voxray.platform.specs.common import StrictModel


class FactorizerSpec(StrictModel):
    name: Literal["swin_factorizer", "factorizer"] = "swin_factorizer"
    """Swin Factorizer (Ashtari et al. 2023); `factorizer` is an alias."""
    widths: list[int] = [32, 64, 128, 256, 512]
    """Channels per stage (encoder); the decoder mirrors them."""
    blocks: int = Field(default=1, ge=1)
    """Factorizer blocks per stage."""
    window: int = Field(default=8, ge=2)
    """Window (patch) edge length for the windowed NMF; BraTS 8, ISLES 4."""
    head_dim: int = Field(default=8, ge=1)
    """Channels per NMF head (matrix rows)."""
    rank: int = Field(default=1, ge=1)
    """NMF rank."""
    iters: int = Field(default=5, ge=1)
    """Unrolled NMF iterations."""
    solver: Literal["hals", "mu"] = "hals"
    """NMF solver: HALS (paper) or multiplicative updates."""
    mlp_ratio: int = Field(default=2, ge=1)
    """MLP hidden-width ratio (BraTS 2, ISLES 4)."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout rate."""
    shifted: bool = True
    """Shifted-window branch (Swin); false = local windows only."""
    pos_embed: bool = True
    """Learnable positional embedding at the bottleneck (fixes the input size to `train.patch`)."""
    deep_supervision: bool = True
    """Return [full, 1/2, 1/4] logits in training."""


class MonaiUNetSpec(StrictModel):
    name: Literal["unet"] = "unet"
    """MONAI UNet (residual units); 2D or 3D from `train.patch`."""
    channels: list[int] = [16, 32, 64, 128, 256]
    """Channels per level."""
    num_res_units: int = Field(default=2, ge=0)
    """Residual units per level."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""


class SegResNetSpec(StrictModel):
    name: Literal["segresnet"] = "segresnet"
    """MONAI SegResNet."""
    init_filters: int = Field(default=16, ge=1)
    """Filters of the first stage."""
    blocks_down: list[int] = [1, 2, 2, 4]
    """Residual blocks per encoder stage."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout rate."""


class UNETRSpec(StrictModel):
    name: Literal["unetr"] = "unetr"
    """MONAI UNETR (ViT encoder); its input size is fixed to `train.patch`."""
    feature_size: int = Field(default=16, ge=1)
    hidden_size: int = Field(default=768, ge=1)
    mlp_dim: int = Field(default=3072, ge=1)
    num_heads: int = Field(default=12, ge=1)


class SwinUNETRSpec(StrictModel):
    name: Literal["swinunetr"] = "swinunetr"
    """MONAI SwinUNETR."""
    feature_size: int = Field(default=24, ge=12)
    """Embedding size (multiple of 12)."""
    depths: list[int] = [2, 2, 2, 2]
    num_heads: list[int] = [3, 6, 12, 24]


class EfficientNetUNetSpec(StrictModel):
    name: Literal["efficientnet_unet"] = "efficientnet_unet"
    """MONAI FlexibleUNet with an EfficientNet encoder, randomly initialised (2D)."""
    backbone: Literal["efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3"] = "efficientnet-b0"


class UNetDepthSpec(StrictModel):
    name: Literal["unet_depth"] = "unet_depth"
    """2D U-Net whose number of levels is `depth`."""
    depth: int = Field(default=4, ge=1, le=7)
    base_channels: int = Field(default=32, ge=1)


class DeepLabV3PlusSpec(StrictModel):
    name: Literal["deeplabv3plus"] = "deeplabv3plus"
    """DeepLabV3+ (ASPP + decoder) on a MONAI encoder (2D)."""
    aspp_rates: list[int] = [6, 12, 18]
    aspp_channels: int = Field(default=256, ge=1)


ModelSpec = Annotated[
    Union[FactorizerSpec, MonaiUNetSpec, SegResNetSpec, UNETRSpec, SwinUNETRSpec, EfficientNetUNetSpec,
          UNetDepthSpec, DeepLabV3PlusSpec],
    Discriminator("name"),
]
"""A model by registry name; `voxray models` lists them."""

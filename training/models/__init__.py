"""The model zoo: registry name → builder(spec), input-size constraints, and spec-level validation.

`build_model` checks a spec against the channels, dims and patch of the run and raises `SpecError` naming the
YAML path (`train.model.depth`, `train.patch`, …) before any network is built. Network modules (and MONAI) are
imported lazily inside `build_model`, so importing this package is cheap and torch-free.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

from voxray.platform.errors import SpecError
from voxray.platform.specs.models import ModelSpec

__all__ = ["ModelInfo", "REGISTRY", "build_model", "list_models", "model_constraints", "check_model",
           "encoder_pattern"]

SPEC_PATH = "train.model"


def _pow2(levels: int) -> int:
    return 2 ** max(levels - 1, 0)


@dataclass(frozen=True)
class ModelInfo:
    """One registry entry: where the builder lives, the supported dims and the input-size rule."""

    name: str
    builder: str  # "module:function", imported on first build
    dims: tuple[int, ...]
    description: str
    divisor: Callable[[Any], int]
    divisor_rule: Callable[[Any], str]
    fixed_size: Callable[[Any], bool] = lambda spec: False
    default_patch: dict[int, tuple[int, ...]] | None = None
    encoder: str = ""
    """Regex (re.match on parameter names) of the encoder, for `train.init.freeze_encoder_steps`."""


_PKG = "voxray.training.models"
_FACTORIZER = dict(
    builder=f"{_PKG}.factorizer:build_factorizer", dims=(3, 2),
    divisor=lambda s: _pow2(len(s.widths)) * s.window,
    divisor_rule=lambda s: f"2**(levels-1) * window = {_pow2(len(s.widths))} * {s.window} "
                           "(train.model.widths, train.model.window)",
    fixed_size=lambda s: s.pos_embed, default_patch={3: (128, 128, 128), 2: (256, 256)},
    encoder=r"(stem|down|encoder)\.")

REGISTRY: dict[str, ModelInfo] = {info.name: info for info in [
    ModelInfo("swin_factorizer", description="Swin Factorizer: shifted-window NMF U-Net, deep supervision "
              "(Ashtari et al. 2023)", **_FACTORIZER),
    ModelInfo("factorizer", description="alias of swin_factorizer", **_FACTORIZER),
    ModelInfo("unet", f"{_PKG}.monai_nets:build_unet", (3, 2), "MONAI residual UNet",
              lambda s: _pow2(len(s.channels)), lambda s: "2**(levels-1) (train.model.channels)",
              encoder=r"model\.(1\.submodule\.)*(0\.|(?=[a-z]))"),  # down layers (…0.) and the bottom block
    ModelInfo("segresnet", f"{_PKG}.monai_nets:build_segresnet", (3, 2), "MONAI SegResNet (Myronenko 2018)",
              lambda s: _pow2(len(s.blocks_down)), lambda s: "2**(stages-1) (train.model.blocks_down)",
              encoder=r"(convInit|down_layers)\."),
    ModelInfo("unetr", f"{_PKG}.monai_nets:build_unetr", (3, 2), "MONAI UNETR, ViT encoder; input fixed to the patch",
              lambda s: 16, lambda s: "16 (the ViT patch)", fixed_size=lambda s: True, encoder=r"(vit|encoder\d+)\."),
    ModelInfo("swinunetr", f"{_PKG}.monai_nets:build_swinunetr", (3, 2), "MONAI SwinUNETR (Hatamizadeh et al. 2022)",
              lambda s: 32, lambda s: "32 (patch embedding 2 × 4 mergings)", encoder=r"(swinViT|encoder\d+)\."),
    ModelInfo("efficientnet_unet", f"{_PKG}.monai_nets:build_efficientnet_unet", (2,),
              "MONAI FlexibleUNet, EfficientNet encoder, random init (no download)",
              lambda s: 32, lambda s: "32 (encoder output stride)", encoder=r"encoder\."),
    ModelInfo("unet_depth", f"{_PKG}.unet_depth:build_unet_depth", (2,), "U-Net with `depth` resolution levels",
              lambda s: _pow2(s.depth), lambda s: f"2**(depth-1) with depth {s.depth} (train.model.depth)",
              encoder=r"encoder\."),
    ModelInfo("deeplabv3plus", f"{_PKG}.deeplabv3plus:build_deeplabv3plus", (2,),
              "DeepLabV3+: ASPP + decoder on a MONAI ResNet encoder", lambda s: 32,
              lambda s: "32 (encoder output stride)", encoder=r"encoder\."),
]}


def _info(name: str) -> ModelInfo:
    if name not in REGISTRY:
        raise SpecError("", [f"{SPEC_PATH}.name: unknown model {name!r} (choose from {', '.join(REGISTRY)})"])
    return REGISTRY[name]


def encoder_pattern(name: str) -> str:
    """Regex matching the encoder's parameter names of model `name` (see `ModelInfo.encoder`)."""
    return _info(name).encoder


def list_models() -> list[dict[str, Any]]:
    """One row per registry name: name, supported spatial dims and a one-line description."""
    return [{"name": i.name, "dims": list(i.dims), "description": i.description} for i in REGISTRY.values()]


def default_patch(name: str, spatial_dims: int | None = None) -> tuple[int, ...]:
    """A valid default patch for `name` (its first supported dims unless given): 128³ Factorizer, else 64³ / 256²."""
    info = _info(name)
    dims = spatial_dims or info.dims[0]
    return (info.default_patch or {}).get(dims, (64,) * 3 if dims == 3 else (256, 256))


def axis_divisors(spec: ModelSpec, spatial_dims: int) -> tuple[int, ...]:
    """What each patch axis must be divisible by: the registry's divisor, or per axis the product of a UNet's
    anisotropic `strides`."""
    strides = getattr(spec, "strides", None)
    if strides and len(strides[0]) == spatial_dims:
        return tuple(int(math.prod(s[a] for s in strides)) for a in range(spatial_dims))
    return (_info(spec.name).divisor(spec),) * spatial_dims


def model_constraints(spec: ModelSpec, spatial_dims: int, patch: tuple[int, ...] | list[int]) -> dict[str, Any]:
    """Input-size rule: every dim divisible by `divisor` (a list per axis for anisotropic UNet strides);
    `fixed_size` is the only accepted size, or None."""
    info = _info(spec.name)
    divs = axis_divisors(spec, spatial_dims)
    return {"divisor": divs[0] if len(set(divs)) == 1 else list(divs),
            "fixed_size": tuple(patch) if info.fixed_size(spec) else None}


def check_model(spec: ModelSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                patch: tuple[int, ...] | list[int]) -> list[str]:
    """Problems (one line each, with the YAML path) of using `spec` with these channels, dims and patch."""
    info, problems = _info(spec.name), []
    if spatial_dims not in info.dims:
        problems.append(f"train.patch: {spec.name} supports {' or '.join(f'{d}D' for d in info.dims)} inputs, "
                        f"got a {spatial_dims}D patch {list(patch)}")
    elif len(patch) != spatial_dims or any(p < 1 for p in patch):
        problems.append(f"train.patch: {list(patch)} must hold {spatial_dims} positive sizes")
    else:
        strides = getattr(spec, "strides", None)
        divs = axis_divisors(spec, spatial_dims)
        if strides and len(strides[0]) != spatial_dims:
            problems.append(f"train.model.strides: entries have {len(strides[0])} values; the {spatial_dims}D patch "
                            f"{list(patch)} needs {spatial_dims}")
        elif any(p % d for p, d in zip(patch, divs)):
            good = [max(d, round(p / d) * d) for p, d in zip(patch, divs)]
            rule = f"{list(divs)} (per axis, the product of train.model.strides)" if strides else info.divisor_rule(spec)
            problems.append(f"train.patch: {list(patch)} is not divisible by {rule} for {spec.name}; use e.g. {good}")
    if in_channels < 1:
        problems.append(f"train.channels: {spec.name} needs >= 1 input channel, got {in_channels}")
    if out_channels < 1:
        problems.append(f"train.task: {spec.name} needs >= 1 output channel, got {out_channels}")
    return problems


def build_model(spec: ModelSpec, *, in_channels: int, out_channels: int, spatial_dims: int,
                patch: tuple[int, ...] | list[int]):
    """Build the network for `spec` (a `ModelSpec`): validated first, raising `SpecError` with YAML paths.

    Returns an `nn.Module` whose forward gives logits (B, out_channels, *patch), or a list [full, 1/2, 1/4] for
    deep supervision (Swin Factorizer).
    """
    problems = check_model(spec, in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims,
                           patch=patch)
    if problems:
        raise SpecError("", problems, hint="`voxray models show NAME --patch …` checks a model without a job")
    module, _, func = _info(spec.name).builder.partition(":")
    builder = getattr(importlib.import_module(module), func)
    return builder(spec, in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims,
                   patch=tuple(patch))

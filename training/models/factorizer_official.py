"""Official Factorizer checkpoints ↔ voxray's `SwinFactorizer`: an explicit name map and reshape rules.

The paper-era code (pashtari/factorizer, commit fa7f03d: `SegmentationFactorizer` on its generic `UNet`) computes
the same function as `voxray.training.models.factorizer.SwinFactorizer`, but names and shapes its weights
differently (docs/finetuning.md lists every rule and where it comes from):

- the encoder keeps each downsampling conv inside its stage: `encoder.blocks.{i}.blocks.0` is the conv of stage
  i ≥ 1 and its Factorizer blocks follow at `blocks.1…` (stage 0 has no conv: its blocks start at `blocks.0`);
  voxray keeps the convs apart in `down.{i-1}` and the blocks in `encoder.{i}.{b}`;
- the decoder is listed deepest-first (`decoder.blocks.0` is the level next to the bottleneck) with the transposed
  conv inside it (`upsample`); voxray indexes `up.{level}` / `decoder.{level}` by resolution, 0 = full;
- a block holds `blocks.nmf` and `blocks.mlp`, each `Residual(Sequential(LayerNorm, sub-block))`, so `fn.0.norm`
  is the pre-norm and `fn.1` the NMF sub-block / MLP; the positional embedding is `pos_embed.pos`;
- pointwise layers are `Linear` wrappers around `nn.Conv1d(k=1)` (weight (out, in, 1)) over flattened voxels where
  voxray uses `ConvNd(k=1)` (weight (out, in, 1, …, 1)): the same numbers, reshaped.

Only names and shapes are handled here; no official code is used or copied. Variants with other parameters
(Performer, dimension-wise positional embeddings, ablations without a sub-block) are rejected by name.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

__all__ = ["to_voxray", "to_official", "strip_lightning", "OfficialLayoutError", "BLOCK_KEYS", "LIGHTNING_PREFIX"]

LIGHTNING_PREFIX = "net."
"""The official LightningModule (`SemanticSegmentation`) holds the network as `self.net`."""

BLOCK_KEYS: dict[str, str] = {
    "adapter.0.weight": "adapter.0.linear.weight",
    "pos_embed": "pos_embed.pos",
    "norm1.weight": "blocks.nmf.fn.0.norm.weight",
    "norm1.bias": "blocks.nmf.fn.0.norm.bias",
    "mixer.in_proj.weight": "blocks.nmf.fn.1.in_proj.linear.weight",
    "mixer.nmf.u0": "blocks.nmf.fn.1.factorize.init.u0",
    "mixer.nmf.v0": "blocks.nmf.fn.1.factorize.init.v0",
    "mixer.out_proj.weight": "blocks.nmf.fn.1.out_proj.linear.weight",
    "mixer.out_proj.bias": "blocks.nmf.fn.1.out_proj.linear.bias",
    "norm2.weight": "blocks.mlp.fn.0.norm.weight",
    "norm2.bias": "blocks.mlp.fn.0.norm.bias",
    "mlp.net.0.weight": "blocks.mlp.fn.1.block.0.linear.weight",
    "mlp.net.0.bias": "blocks.mlp.fn.1.block.0.linear.bias",
    "mlp.net.3.weight": "blocks.mlp.fn.1.block.3.linear.weight",
    "mlp.net.3.bias": "blocks.mlp.fn.1.block.3.linear.bias",
}
"""Inside one Factorizer block: voxray suffix → official suffix."""
_FROM_OFFICIAL = {v: k for k, v in BLOCK_KEYS.items()}
_CONV1D = ".linear.weight"  # official pointwise weights: (out, in, 1)


class OfficialLayoutError(ValueError):
    """A state_dict that does not follow the layout this map covers (names the offending keys)."""


def strip_lightning(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights of a Lightning checkpoint's `state_dict` (`net.` prefix removed, other modules'
    keys dropped); a plain network state_dict is returned as is."""
    if not any(k.startswith(LIGHTNING_PREFIX) for k in state):
        return dict(state)
    return {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}


def _levels(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    if not found or found != set(range(max(found) + 1)):
        raise OfficialLayoutError(f"cannot count the encoder levels (keys matching {pattern!r}: {sorted(found)})")
    return max(found) + 1


def _block_to_voxray(rest: str, key: str) -> str:
    if rest not in _FROM_OFFICIAL:
        raise OfficialLayoutError(f"{key}: not a parameter of a paper-era Swin/Local Factorizer block "
                                  f"(expected one of {sorted(_FROM_OFFICIAL)})")
    return _FROM_OFFICIAL[rest]


def _key_to_voxray(key: str, levels: int) -> str:
    if key == "stem.weight" or re.fullmatch(r"heads\.\d+\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"encoder\.blocks\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if m:
        stage, index, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        if stage > 0 and index == 0:
            if rest != "weight":
                raise OfficialLayoutError(f"{key}: the downsampling conv has no bias in the paper configuration")
            return f"down.{stage - 1}.weight"
        block = index - (1 if stage > 0 else 0)
        return f"encoder.{stage}.{block}.{_block_to_voxray(rest, key)}"
    m = re.fullmatch(r"decoder\.blocks\.(\d+)\.(upsample\.(weight|bias)|blocks\.(\d+)\.(.+))", key)
    if m:
        level = levels - 2 - int(m.group(1))
        if m.group(3):
            return f"up.{level}.{m.group(3)}"
        return f"decoder.{level}.{m.group(4)}.{_block_to_voxray(m.group(5), key)}"
    raise OfficialLayoutError(f"{key}: not part of the official SegmentationFactorizer layout")


def _key_to_official(key: str, levels: int) -> str:
    if key == "stem.weight" or re.fullmatch(r"heads\.\d+\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"down\.(\d+)\.weight", key)
    if m:
        return f"encoder.blocks.{int(m.group(1)) + 1}.blocks.0.weight"
    m = re.fullmatch(r"(encoder|decoder)\.(\d+)\.(\d+)\.(.+)", key)
    if m and m.group(4) in BLOCK_KEYS:
        part, level, block, rest = m.group(1), int(m.group(2)), int(m.group(3)), BLOCK_KEYS[m.group(4)]
        if part == "encoder":
            return f"encoder.blocks.{level}.blocks.{block + (1 if level > 0 else 0)}.{rest}"
        return f"decoder.blocks.{levels - 2 - level}.blocks.{block}.{rest}"
    m = re.fullmatch(r"up\.(\d+)\.(weight|bias)", key)
    if m:
        return f"decoder.blocks.{levels - 2 - int(m.group(1))}.upsample.{m.group(2)}"
    raise OfficialLayoutError(f"{key}: not a voxray SwinFactorizer parameter")


def _spatial_dims(state: Mapping[str, torch.Tensor]) -> int:
    if "stem.weight" not in state:
        raise OfficialLayoutError("no stem.weight: not a Factorizer state_dict")
    return state["stem.weight"].ndim - 2


def to_voxray(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official (paper-era) SegmentationFactorizer state_dict → voxray SwinFactorizer state_dict.

    Pointwise Conv1d weights (out, in, 1) become ConvNd weights (out, in, 1, …, 1); every other tensor is copied
    unchanged. Raises OfficialLayoutError for a key outside the map.
    """
    state = strip_lightning(state)
    dims, levels = _spatial_dims(state), _levels(state, r"encoder\.blocks\.(\d+)\.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith(_CONV1D):
            if value.ndim != 3 or value.shape[-1] != 1:
                raise OfficialLayoutError(f"{key}: expected a pointwise Conv1d weight (out, in, 1), got "
                                          f"{tuple(value.shape)}")
            value = value.reshape(*value.shape[:2], *(1,) * dims)
        out[_key_to_voxray(key, levels)] = value
    return out


def to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """voxray SwinFactorizer state_dict → the official layout (the inverse of `to_voxray`)."""
    levels = _levels(state, r"encoder\.(\d+)\.")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = _key_to_official(key, levels)
        if name.endswith(_CONV1D):
            value = value.reshape(*value.shape[:2], 1)
        out[name] = value
    return out

"""Segmentation tasks: how a store's label map becomes network targets, and how logits become labels again.

A task is a name plus the store metadata (`labels`, `label_encoding`, `regions`, …, see CONTRACTS.md). Training
uses `encode_target`, serving uses `decode_logits`; both live here so they cannot drift apart.

- `labels`: softmax over one channel per label value (sorted values → class indices 0..K-1).
- `brats_regions`: one sigmoid channel per region (ET, TC, WT …) from the store's `regions` (label sets).
- `binary`: one sigmoid channel, any label > 0.
- `multilabel`: one sigmoid channel per non-background class (bit k-1 of a bitmask store, or value k).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

TASKS = ("labels", "brats_regions", "binary", "multilabel")

__all__ = ["TASKS", "activation", "num_outputs", "output_names", "encode_target", "activate", "decode_logits",
           "label_values", "region_sets", "restrict_to_nonzero", "nonzero_mask"]

BACKGROUND_LOGIT = 30.0
"""Logit magnitude that makes a voxel certain background (sigmoid(−30) ≈ 1e−13)."""


def _check(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def label_values(meta: Mapping[str, Any]) -> list[int]:
    """Sorted label values of the store (keys may be strings after a JSON round trip); 0 is always included."""
    values = {int(v) for v in (meta.get("labels") or {})}
    values.add(0)
    return sorted(values)


def region_sets(meta: Mapping[str, Any]) -> dict[str, list[int]]:
    """The store's regions (name → label values), in the store's order (ET, TC, WT for BraTS layouts)."""
    regions = meta.get("regions")
    if not regions:
        raise ValueError(f"task 'brats_regions' needs a store with `regions` (layout {meta.get('layout')!r} has none)")
    return {str(k): [int(v) for v in vs] for k, vs in regions.items()}


def activation(task: str) -> str:
    """`softmax` for mutually exclusive labels, `sigmoid` for (possibly overlapping) channels."""
    _check(task)
    return "softmax" if task == "labels" else "sigmoid"


def output_names(task: str, meta: Mapping[str, Any]) -> list[str]:
    """A name per output channel (used in metric names such as `val/dice_ET`)."""
    _check(task)
    names = {int(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    if task == "labels":
        return [names.get(v, "background" if v == 0 else f"label{v}") for v in label_values(meta)]
    if task == "brats_regions":
        return list(region_sets(meta))
    if task == "binary":
        nonzero = [v for v in label_values(meta) if v != 0]
        return [names[nonzero[0]]] if len(nonzero) == 1 and nonzero[0] in names else ["foreground"]
    return [names.get(v, f"class{v}") for v in label_values(meta) if v != 0]


def num_outputs(task: str, meta: Mapping[str, Any]) -> int:
    """Channels the network must output for `task` on a store with metadata `meta`."""
    return len(output_names(task, meta))


def encode_target(label: np.ndarray | torch.Tensor, task: str, meta: Mapping[str, Any]) -> torch.Tensor:
    """Label map (*S) in store values → target: float (K, *S) for sigmoid tasks, int64 class indices (1, *S) for
    `labels` (MONAI losses one-hot them)."""
    _check(task)
    lab = torch.as_tensor(np.asarray(label) if not isinstance(label, torch.Tensor) else label).long()
    bitmask = meta.get("label_encoding") == "bitmask"
    if task == "labels":
        if bitmask:
            raise ValueError("task 'labels' needs an index-encoded store; this store is bitmask-encoded "
                             "(overlapping classes): use task 'multilabel'")
        lut = torch.zeros(int(max(label_values(meta))) + 1, dtype=torch.long)
        for i, v in enumerate(label_values(meta)):
            lut[v] = i
        return lut[lab.clamp(0, len(lut) - 1)].unsqueeze(0)
    if task == "binary":
        return (lab > 0).float().unsqueeze(0)
    if task == "brats_regions":
        chans = [torch.isin(lab, torch.tensor(vs)) for vs in region_sets(meta).values()]
        return torch.stack(chans).float()
    values = [v for v in label_values(meta) if v != 0]
    if bitmask:
        return torch.stack([(lab >> (v - 1)) & 1 for v in values]).float()
    return torch.stack([lab == v for v in values]).float()


def activate(logits: torch.Tensor, task: str, *, dim: int = 0) -> torch.Tensor:
    """Logits → probabilities (softmax or sigmoid along the channel `dim`)."""
    return torch.softmax(logits.float(), dim=dim) if activation(task) == "softmax" else torch.sigmoid(logits.float())


def _paint_regions(on: torch.Tensor, meta: Mapping[str, Any]) -> np.ndarray:
    """Nested regions → labels: paint the largest region first with its own label (the labels it does not share with
    smaller regions), then smaller ones over it. MSD: WT∧¬TC → 1, TC∧¬ET → 2, ET → 3; BraTS 2023: 2, 1, 3."""
    regions = list(region_sets(meta).values())
    out = np.zeros(tuple(on.shape[1:]), dtype=np.uint8)
    order = sorted(range(len(regions)), key=lambda i: -len(regions[i]))
    for i in order:
        smaller = {v for j in order if len(regions[j]) < len(regions[i]) for v in regions[j]}
        own = sorted(set(regions[i]) - smaller) or sorted(regions[i])
        out[on[i].cpu().numpy()] = own[-1]
    return out


def decode_logits(logits: torch.Tensor | np.ndarray, task: str, meta: Mapping[str, Any]) -> np.ndarray:
    """Logits (K, *S) → uint8 label map (*S) in the dataset's label values and encoding (what serving returns)."""
    _check(task)
    x = torch.as_tensor(logits).float()
    if x.shape[0] != num_outputs(task, meta):
        raise ValueError(f"task {task!r} expects {num_outputs(task, meta)} channels, got logits of shape "
                         f"{tuple(x.shape)}")
    if task == "labels":
        lut = np.asarray(label_values(meta), dtype=np.uint8)
        return lut[x.argmax(0).cpu().numpy()]
    on = x > 0  # sigmoid(x) > 0.5
    if task == "binary":
        nonzero = [v for v in label_values(meta) if v != 0]
        fg = nonzero[0] if len(nonzero) == 1 else 1  # the dataset's lesion value when it has exactly one
        return (on[0].cpu().numpy() * fg).astype(np.uint8)
    if task == "brats_regions":
        return _paint_regions(on, meta)
    values = [v for v in label_values(meta) if v != 0]
    out = np.zeros(tuple(x.shape[1:]), dtype=np.uint8)
    arr = on.cpu().numpy()
    for k, v in enumerate(values):
        if meta.get("label_encoding") == "bitmask":
            out |= (arr[k].astype(np.uint8) << (v - 1)).astype(np.uint8)
        else:
            out[arr[k]] = v
    return out


def nonzero_mask(image: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Voxels nonzero in any channel of a (C, *S) image: the body of a skull-stripped / masked scan."""
    return (torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image) != 0).any(0)


def restrict_to_nonzero(logits: torch.Tensor, image: torch.Tensor | np.ndarray, task: str) -> torch.Tensor:
    """Logits (K, *S) with every voxel outside the image's nonzero region made certain background.

    Skull-stripped scans are zero outside the brain; z-scoring inside the mask leaves those voxels at 0, which is
    close to the z-score of grey matter, so an unmasked network can paint tissue over empty background. The
    model card records `restrict_to_nonzero` so validation, `predict` and serving apply the same rule.
    """
    outside = ~nonzero_mask(image)
    if not bool(outside.any()):
        return logits
    out = logits.clone()
    if activation(task) == "softmax":
        out[:, outside] = -BACKGROUND_LOGIT
        out[0, outside] = BACKGROUND_LOGIT
    else:
        out[:, outside] = -BACKGROUND_LOGIT
    return out

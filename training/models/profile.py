"""Parameter and FLOP counts of a built network, without running it (meta tensors) where possible.

FLOPs follow the convention that reproduces the Factorizer paper: PyTorch's `FlopCounterMode` (2 × multiply-adds
of convolutions, linear layers and (batched) matmuls; elementwise ops not counted), for one sample, eval mode.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "forward_profile"]

log = logging.getLogger(__name__)


def count_params(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the NMF initial factors excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _shapes(out) -> list[list[int]]:
    outs = out if isinstance(out, (list, tuple)) else [out]
    return [list(o.shape) for o in outs]


def forward_profile(model: nn.Module, in_channels: int, patch: tuple[int, ...], batch: int = 1) -> dict:
    """{"gflops": forward GFLOPs, "outputs": output shapes} for a (batch, in_channels, *patch) input.

    Runs on a meta-device copy (shapes only, instant even at 128³); models whose ops have no meta kernel fall
    back to a real CPU forward on zeros.
    """
    was_training = model.training
    try:
        probe, device = copy.deepcopy(model).to("meta").eval(), "meta"
    except (RuntimeError, NotImplementedError):
        probe, device = model.eval(), "cpu"
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            out = probe(torch.zeros(batch, in_channels, *patch, device=device))
    except (RuntimeError, NotImplementedError) as exc:
        if device == "cpu":
            raise
        log.info("meta forward failed (%s); counting FLOPs with a CPU forward", exc)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = model.eval()(torch.zeros(batch, in_channels, *patch))
    model.train(was_training)
    return {"gflops": counter.get_total_flops() / 1e9, "outputs": _shapes(out)}

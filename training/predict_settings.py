"""Inference settings of one prediction: the model card's `inference:` block, then per-call overrides.

One resolver for the CLI, serving and notebooks, so `--window 64` and `tta=mirror` mean the same everywhere and a
window a model cannot take (a fixed-size Swin Factorizer asked for 64³) fails before any volume is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from voxray.platform.errors import VoxrayError

__all__ = ["InferenceSettings", "InvalidSettings", "resolve_settings", "mirror_axes", "inference_card"]


class InvalidSettings(VoxrayError):
    """An inference setting (card or override) this model or machine cannot use."""

    exit_code = 2


@dataclass(frozen=True)
class InferenceSettings:
    """Concrete settings: window size, overlap, windows per forward, device, precision, TTA mirror axes."""

    window: tuple[int, ...]
    overlap: float
    batch: int
    device: torch.device
    precision: str
    mirror: tuple[int, ...] = ()
    backend: str = "torch"
    """torch, or onnxruntime (CPU; training/onnx_export.py)."""
    qa: str = "warn"

    @property
    def effective_precision(self) -> str:
        """What actually runs: reduced precision applies on CUDA only."""
        from voxray.training.inference import amp_dtype

        dtype = amp_dtype(self.device, self.precision)
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # type: ignore[arg-type]

    @property
    def tta_members(self) -> int:
        return 2 ** len(self.mirror)

    def describe(self) -> str:
        """One line for the CLI: `window 32×32×32, overlap 0.25, 4 windows/forward, cpu fp32, TTA ×8 (axes 0,1,2)`."""
        tta = f"TTA ×{self.tta_members} (axes {','.join(map(str, self.mirror))})" if self.mirror else "no TTA"
        runtime = "" if self.backend == "torch" else f" ({self.backend})"
        return (f"window {'×'.join(map(str, self.window))}, overlap {self.overlap:g}, {self.batch} windows/forward, "
                f"{self.device} {self.effective_precision}{runtime}, {tta}")


def mirror_axes(tta: Any, dims: int) -> tuple[int, ...]:
    """`none` → (), `mirror` → every spatial axis, a list → those axes (each < `dims`)."""
    if tta in (None, "none"):
        return ()
    if tta == "mirror":
        return tuple(range(dims))
    axes = tuple(sorted(int(a) for a in tta))
    if any(a >= dims for a in axes):
        raise InvalidSettings(f"tta axes {list(axes)}: a {dims}D model has spatial axes 0..{dims - 1}")
    return axes


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidSettings(f"device {name!r}: CUDA is not available on this machine", hint="use --device cpu")
    return device


def _check_window(card: Mapping[str, Any], window: tuple[int, ...], patch: tuple[int, ...]) -> None:
    """Fixed-size models take only their patch; fully convolutional ones any multiple of their size divisor."""
    if len(window) != len(patch):
        raise InvalidSettings(f"window {list(window)} has {len(window)} dims; the model's patch is {list(patch)}")
    if window == patch or not card.get("model"):
        return
    from pydantic import TypeAdapter, ValidationError

    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import model_constraints

    try:
        spec = TypeAdapter(ModelSpec).validate_python(dict(card["model"]))
    except ValidationError:
        return  # the registry loader reports a broken card; nothing to add here
    rule = model_constraints(spec, len(patch), patch)
    if rule["fixed_size"] is not None:
        raise InvalidSettings(f"window {list(window)}: {spec.name} has a fixed input size (positional embedding); "
                              f"it predicts with its training patch {list(patch)} only")
    div = rule["divisor"]
    divs = [int(d) for d in div] if isinstance(div, (list, tuple)) else [int(div)] * len(window)  # per axis
    if any(w % d for w, d in zip(window, divs)):
        raise InvalidSettings(f"window {list(window)} is not divisible by {div}, the size divisor of {spec.name}; "
                              f"use e.g. {[max(d, round(w / d) * d) for w, d in zip(window, divs)]}")


def resolve_settings(card: Mapping[str, Any], **overrides: Any) -> InferenceSettings:
    """Settings from `card["inference"]` (defaults for older cards) with the non-None `overrides` on top.

    Overrides: window, overlap, batch, device, precision, tta (`none`, `mirror`, or a list of axes), qa (policy),
    backend (`torch`, `onnxruntime`: device auto means the CPU).
    """
    from pydantic import ValidationError

    from voxray.platform.specs.inference import InferenceSpec
    from voxray.platform.specs.loader import format_errors

    base = dict(card.get("inference") or {})
    base.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in overrides.items() if v is not None})
    try:
        spec = InferenceSpec.model_validate(base)
    except ValidationError as exc:
        raise InvalidSettings("invalid inference settings: " + "; ".join(format_errors(exc))) from None
    patch = tuple(int(p) for p in card["patch"])
    window = tuple(spec.window) if spec.window else patch
    _check_window(card, window, patch)
    device = _device("cpu" if spec.backend == "onnxruntime" and spec.device == "auto" else spec.device)
    return InferenceSettings(window=window, overlap=spec.overlap, batch=spec.batch, device=device,
                             precision=spec.precision, mirror=mirror_axes(spec.tta, len(patch)), qa=spec.qa,
                             backend=spec.backend)


def inference_card(spec: Any) -> dict[str, Any]:
    """The card's `inference:` block from a TrainSpec (`train.inference`), window filled in (null → the patch).

    A window the model cannot take is logged and replaced by the patch: a finished training run is never lost to
    an inference setting, and `voxray predict --window` can still choose another one.
    """
    import logging

    block = spec.inference.model_dump(mode="json")
    patch = [int(p) for p in spec.patch]
    block["window"] = list(block.get("window") or patch)
    card = {"model": spec.model.model_dump(mode="json"), "patch": patch}
    try:
        _check_window(card, tuple(block["window"]), tuple(patch))
        mirror_axes(block["tta"], len(patch))
    except InvalidSettings as exc:
        logging.getLogger(__name__).warning("train.inference: %s; the card keeps window %s and no TTA", exc, patch)
        block["window"], block["tta"] = patch, "none"
    return block

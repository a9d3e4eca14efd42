"""The `train.inference` section: how the exported model predicts whole volumes.

Copied into the model card at export (`inference:`), so `voxray predict` and serving start from what the model was
built for; `voxray predict --window/--overlap/--batch/--device/--precision/--tta` and the HTTP API's `tta=` query
override it per call. Pure pydantic: importing this module never imports torch.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from voxray.platform.specs.common import StrictModel

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

TtaSetting = Literal["none", "mirror"] | list[int]


class InferenceSpec(StrictModel):
    window: list[int] | None = Field(default=None, min_length=2, max_length=3)
    """Sliding-window size; null = the training patch. Fully convolutional models may take a larger window (fewer,
    larger forward passes; it must keep the model's size divisor); models with a fixed input size (Swin Factorizer
    with `pos_embed`, UNETR) accept only the patch."""
    overlap: float = Field(default=0.25, ge=0, lt=1)
    """Fraction by which neighbouring windows overlap (Gaussian-weighted blend)."""
    batch: int = Field(default=4, ge=1)
    """Windows per forward pass."""
    device: str = "auto"
    """Torch device: auto (CUDA when present, else CPU), cpu, cuda, cuda:N, mps."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere; bf16/fp16 apply on CUDA only (CPU runs fp32)."""
    tta: TtaSetting = "none"
    """Mirror test-time augmentation: none, mirror (flips over every subset of the spatial axes: 8 forward passes
    per window in 3D, 4 in 2D), or a list of spatial axes of the model grid (0 = Z … of (Z, Y, X)) whose subsets are
    flipped. A request may choose otherwise (`--tta`, `tta=`)."""

    qa: Literal["warn", "refuse", "off"] = "warn"
    """Input QA against the card's training fingerprint (docs/serving.md "Input QA"): warn (report findings with
    the prediction), refuse (an input with warnings is refused: HTTP 422, CLI exit 4) or off (no checks)."""

    backend: Literal["torch", "onnxruntime"] = "torch"
    """Network runtime: torch (the model's own device and precision) or onnxruntime (CPU, fp32; needs `voxray export
    --onnx` first and the exported window). Pre/postprocessing, windows and TTA are the same for both."""

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not _DEVICE.match(v):
            raise ValueError(f"device {v!r} must be auto, cpu, mps, cuda or cuda:N")
        return v

    @field_validator("tta")
    @classmethod
    def _axes(cls, v: TtaSetting) -> TtaSetting:
        if isinstance(v, list) and (len(set(v)) != len(v) or any(a < 0 or a > 2 for a in v)):
            raise ValueError(f"tta axes {v} must be distinct spatial axes 0, 1 or 2")
        return v

    @field_validator("window")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and min(v) < 1:
            raise ValueError(f"window {v} must hold positive sizes")
        return v


def parse_tta(text: str) -> TtaSetting:
    """`none`, `mirror`, or comma-separated axes (`0,2`) as typed on the CLI or in a query string."""
    value = text.strip().lower()
    if value in ("none", "off", "false", ""):
        return "none"
    if value in ("mirror", "on", "true"):
        return "mirror"
    try:
        return [int(a) for a in value.split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"tta {text!r} must be none, mirror or comma-separated axes such as 0,2") from None


__all__ = ["InferenceSpec", "TtaSetting", "parse_tta"]

"""ONNX export of a registry model (`voxray export --onnx`) and the onnxruntime network prediction runs with.

The ONNX graph is written beside the card (`model.onnx` in the version folder) and described in the card's `onnx:`
block (exporter, opset, window, the max |Δ logits| measured against torch at export), so the card stays the one
contract. `backend: onnxruntime` (card `inference:` default, `--backend`, `Predictor.from_registry(backend=)`) swaps
the torch module for `OnnxNetwork`, an `nn.Module` whose forward runs an onnxruntime CPU session: the window engine
(`inference.predict_windows`, `windows.predict_windows_mixed`), TTA, decoding and the inverse transform are the same
code for both backends.

Exporter: the dynamo exporter (`torch.onnx.export(dynamo=True)`) with a dynamic batch axis; when it fails, the
TorchScript exporter (`dynamo=False`) with `dynamic_axes`. On torch 2.13 dynamo exports the Swin Factorizer and
MONAI UNet; TorchScript exports the UNet but not the Factorizer (see training/models/factorizer.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from voxray.platform.errors import VoxrayError

log = logging.getLogger(__name__)

__all__ = ["ONNX_FILE", "OPSET", "export_onnx", "export_graph", "OnnxNetwork", "load_onnx", "OnnxUnavailable"]

ONNX_FILE = "model.onnx"
OPSET = 18
_DIFF_ATOL = 1e-3
"""Largest |Δ logits| torch vs onnxruntime an export accepts (float32 kernels differ by ~1e-6)."""


class OnnxUnavailable(VoxrayError):
    """The onnxruntime backend cannot run this model: no ONNX export, another window, or a non-CPU device."""

    exit_code = 2


class _FirstHead(nn.Module):
    """The network with deep-supervision heads dropped: ONNX gets one output, the full-resolution logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from voxray.training.inference import first_head

        return first_head(self.net(x))


def export_graph(model: nn.Module, in_channels: int, window: Sequence[int], path: str | Path) -> str:
    """Write `model` (eval mode) as ONNX for inputs (B, in_channels, *window), B dynamic; returns the exporter used
    (`dynamo` or `torchscript`)."""
    import warnings

    net = _FirstHead(model).eval()
    x = torch.randn(2, in_channels, *[int(w) for w in window])
    names = dict(input_names=["image"], output_names=["logits"], opset_version=OPSET)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(path), dynamo=True, verbose=False,
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), **names)
        return "dynamo"
    except Exception as exc:  # the dynamo exporter raises many types (export, decomposition, onnxscript)
        log.warning("dynamo ONNX export failed (%s: %s); trying the TorchScript exporter", type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **names)
    return "torchscript"


def _session(path: str | Path, threads: int | None = None) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxUnavailable("the onnxruntime backend needs the onnxruntime package",
                              hint='pip install "onnxruntime>=1.17"') from None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class OnnxNetwork(nn.Module):
    """An onnxruntime CPU session as a module: (B, C, *W) float32 → logits (B, K, *W) on the input's device.

    No parameters: `.to()`/`.eval()` are no-ops, so the predictor and the window engine treat it like the torch net.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.session = _session(path, threads)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, *W) with W the exported window → (B, K, *W) float32."""
        (y,) = self.session.run(None, {self.input_name: x.detach().to("cpu", torch.float32).numpy()})
        return torch.from_numpy(y).to(x.device)


def _max_diff(model: nn.Module, path: Path, in_channels: int, window: Sequence[int]) -> float:
    """Max |Δ logits| between torch and onnxruntime on random inputs of batch 1 and 3 (the batch axis is dynamic)."""
    from voxray.training.inference import first_head

    onnx_net, gen, worst = OnnxNetwork(path), torch.Generator().manual_seed(0), 0.0
    for b in (1, 3):
        x = torch.randn(b, in_channels, *window, generator=gen)
        with torch.no_grad():
            ref = first_head(model(x)).float()
        worst = max(worst, float((onnx_net(x) - ref).abs().max()))
    return worst


def _write_card(vdir: Path, card: Mapping[str, Any]) -> None:
    """Replace model.yaml atomically (a reader sees the old card or the new one, never half)."""
    import yaml

    from voxray.training.registry import CARD

    fd, tmp = tempfile.mkstemp(prefix=".card-", dir=vdir)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(dict(card), fh, sort_keys=False)
    os.replace(tmp, vdir / CARD)


def export_onnx(path: str | Path, *, default_backend: bool = False) -> dict[str, Any]:
    """Export the registry model at `path` (version folder or `<registry>/<name>` → latest) as ONNX beside its card
    and record it in the card's `onnx:` block; `default_backend` also makes onnxruntime the card's inference
    backend (what `voxray serve` then uses). An ensemble exports each member. Returns the `onnx:` block (or, for an
    ensemble, {"members": [block, ...]})."""
    from voxray.platform.paths import is_remote
    from voxray.training.registry import InvalidCard, load_model, read_card, resolve_version

    if isinstance(path, str) and is_remote(path):
        raise VoxrayError(f"{path}: ONNX export writes into a local registry version folder",
                          hint="copy the version folder to local disk, export there, then upload it")
    vdir = Path(resolve_version(path))
    card = read_card(vdir)
    if card.get("ensemble"):
        from voxray.training.ensemble import member_dirs

        blocks = [export_onnx(m) for m in member_dirs(vdir, card)]
        return {"members": blocks}
    model, card = load_model(vdir, "cpu")
    window = [int(w) for w in ((card.get("inference") or {}).get("window") or card["patch"])]
    target = vdir / ONNX_FILE
    tmp = vdir / f".{ONNX_FILE}.tmp"
    exporter = export_graph(model, int(card["in_channels"]), window, tmp)
    diff = _max_diff(model, tmp, int(card["in_channels"]), window)
    if not diff <= _DIFF_ATOL:
        tmp.unlink(missing_ok=True)
        raise InvalidCard(f"{vdir}: the ONNX graph ({exporter} exporter) differs from torch by {diff:.3g} "
                          f"(> {_DIFF_ATOL}); not written")
    os.replace(tmp, target)
    block = {"file": ONNX_FILE, "exporter": exporter, "opset": OPSET, "window": window, "dynamic_batch": True,
             "max_abs_diff": float(f"{diff:.3g}"), "onnxruntime": _ort_version(),
             "sha256": hashlib.sha256(target.read_bytes()).hexdigest()}
    card["onnx"] = block
    if default_backend:
        card["inference"] = {**(card.get("inference") or {}), "backend": "onnxruntime"}
    _write_card(vdir, card)
    log.info("wrote %s (%s exporter, max |Δ logits| %.2g)", target, exporter, diff)
    return block


def _ort_version() -> str:
    import onnxruntime

    return str(onnxruntime.__version__)


def load_onnx(vdir: str | Path, card: Mapping[str, Any], window: Sequence[int], device: torch.device,
              threads: int | None = None) -> OnnxNetwork:
    """The onnxruntime network of a version folder, checked against the settings it will run with."""
    from voxray.training.registry import local_copy

    block = card.get("onnx") or {}
    where = f"{card.get('name')} v{card.get('version')}"
    if device.type != "cpu":
        raise OnnxUnavailable(f"backend onnxruntime runs on the CPU; device {device} was asked for",
                              hint="use --device cpu (or auto), or --backend torch")
    local = local_copy(vdir)
    if not block or not (local / str(block.get("file", ONNX_FILE))).is_file():
        raise OnnxUnavailable(f"{where} has no ONNX export in {local}",
                              hint=f"run `voxray export --onnx {vdir}` first, or use --backend torch")
    if [int(w) for w in block.get("window") or ()] != [int(w) for w in window]:
        raise OnnxUnavailable(f"{where}: the ONNX graph takes windows of {block.get('window')}, not {list(window)}",
                              hint=f"predict with --window {','.join(map(str, block.get('window') or []))} or "
                                   f"--backend torch")
    return OnnxNetwork(local / str(block.get("file", ONNX_FILE)), threads=threads)


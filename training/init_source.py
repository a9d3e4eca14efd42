"""Where `train.init` weights come from: a registry entry, a voxray checkpoint folder or a weights file.

Every source becomes a `Source`: a state_dict in voxray's key layout, the model card when there is one (a registry
entry: channel names, outputs, architecture) and the lineage the new model card records (parent name and version,
or the file's sha256). Official Factorizer files are mapped by `models.factorizer_official`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxray.platform.errors import SpecError
from voxray.platform.specs.train import InitSpec

log = logging.getLogger(__name__)

__all__ = ["Source", "load_source", "sha256_of", "read_weights_file"]

CHECKPOINT_STATE = "state.pt"


@dataclass
class Source:
    """Weights to start from, in voxray's layout, with what is known about them."""

    state: dict[str, torch.Tensor]
    card: dict[str, Any] | None
    lineage: dict[str, Any]


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file (streamed): what the card records for weights from outside the registry."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _error(message: str, hint: str | None = None) -> SpecError:
    return SpecError("", [f"train.init: {message}"], hint=hint)


def _torch_load(path: Path, allow_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (torch raises UnpicklingError, RuntimeError … for refused pickles)
        if not allow_pickle:
            raise _error(f"{path}: torch's safe loader (weights_only) refused the file: it pickles objects other "
                         f"than tensors ({type(exc).__name__}); set allow_pickle: true if you trust it",
                         hint="official Lightning checkpoints pickle classes in their hyper-parameters; "
                              "allow_pickle runs full unpickling, which can execute code from the file") from None
    log.warning("loading %s with full unpickling (train.init.allow_pickle: true)", path)
    return torch.load(path, map_location="cpu", weights_only=False)


def read_weights_file(path: str | Path, fmt: str, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """A weights file → state_dict in voxray's layout.

    .safetensors is read as is; .pt/.pth/.ckpt/.bin may hold a plain state_dict, a Lightning checkpoint
    (`state_dict`), or a voxray training state (`model`). `fmt` `factorizer_official` maps the official names.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path), device="cpu")
    else:
        obj = _torch_load(path, allow_pickle)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning checkpoint
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # voxray state.pt
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise _error(f"{path}: not a state_dict (a mapping of names to tensors)")
    state = {k.removeprefix("module."): v for k, v in obj.items()}  # saved from a DDP wrapper
    if fmt == "factorizer_official":
        from voxray.training.models.factorizer_official import OfficialLayoutError, to_voxray

        try:
            state = to_voxray(state)
        except OfficialLayoutError as exc:
            raise _error(f"{path} (format factorizer_official): {exc}",
                         hint="docs/finetuning.md lists the official layout the map covers") from None
    return state


def _registry_source(folder: Path) -> Source:
    from safetensors.torch import load_file

    from voxray.training.registry import WEIGHTS, read_card, resolve_version

    vdir = resolve_version(folder)
    card = read_card(vdir)
    weights = vdir / WEIGHTS
    lineage = {"source": "registry", "name": card.get("name"), "version": card.get("version"), "path": str(vdir),
               "sha256": sha256_of(weights)}
    return Source(load_file(str(weights), device="cpu"), card, lineage)


def load_source(init: InitSpec, registry_root: str) -> Source:
    """Read the weights `init` names; errors are SpecErrors naming `train.init`."""
    from voxray.training.registry import ModelNotFound, list_versions

    if init.model is not None:
        root = Path(init.registry or registry_root)
        try:
            return _registry_source(root / init.model)
        except ModelNotFound as exc:
            raise _error(f"model {init.model!r} is not in the registry {str(root)!r}: {exc}",
                         hint="`voxray models registry <root>` lists the entries") from None
    path = Path(init.path)
    if not path.exists():
        raise _error(f"path {str(path)!r} does not exist")
    if path.is_dir():
        if (path / "model.yaml").is_file() or list_versions(path):
            return _registry_source(path)
        if (path / CHECKPOINT_STATE).is_file():
            state = torch.load(path / CHECKPOINT_STATE, map_location="cpu", weights_only=False)
            lineage = {"source": "checkpoint", "path": str(path), "step": int(state.get("step", 0)),
                       "sha256": sha256_of(path / CHECKPOINT_STATE)}
            return Source(dict(state["model"]), None, lineage)
        raise _error(f"{str(path)!r} is neither a registry entry (model.yaml) nor a checkpoint folder "
                     f"({CHECKPOINT_STATE})")
    state = read_weights_file(path, init.format, allow_pickle=init.allow_pickle)
    return Source(state, None, {"source": "file", "path": str(path), "format": init.format,
                                "sha256": sha256_of(path)})

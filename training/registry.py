"""Model registry: `<registry>/<name>/<version>/{model.safetensors, model.yaml}`.

A version is a self-contained folder: the card (model.yaml) carries the architecture spec, channels, label map and
preprocessing config, so serving rebuilds the network and its transforms from the folder alone. Versions are
integers 1, 2, 3 …; a path naming only `<registry>/<name>` means the latest version. Exports are atomic: the folder
is written under a temporary name and renamed into place, so a reader never sees half a version.

A registry may live on an object store (`s3://bucket/registry`): versions are listed by their cards, an export
uploads the weights first and the card last (the card is the commit: a version without one is invisible), and
`load_model` copies a version into this node's cache (versions never change, so the copy is reused).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from voxray.platform.errors import VoxrayError
from voxray.platform.paths import is_remote, join

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CARD = "model.yaml"
REQUIRED_KEYS = ("model", "spatial_dims", "patch", "in_channels", "channels", "out_channels", "task")
"""Card keys the exporter must supply; name, version and created are filled in here."""
CARD_KEYS = ("name", "version", "created", "model", "spatial_dims", "patch", "in_channels", "channels",
             "out_channels", "task", "labels", "label_encoding", "regions", "slice_axis", "preprocess",
             "restrict_to_nonzero", "metrics", "source", "lineage", "fingerprint", "uncertainty_reference")


class ModelNotFound(VoxrayError):
    """A registry path that holds no exported model."""

    exit_code = 4


class InvalidCard(VoxrayError):
    """A model card (model.yaml) that is missing keys or inconsistent with its weights."""

    exit_code = 4


def _remote(path: str | Path) -> bool:
    return isinstance(path, str) and is_remote(path)


def list_versions(name_dir: str | Path) -> list[int]:
    """Exported versions under `<registry>/<name>`, ascending (folders named by an integer with a card)."""
    if _remote(name_dir):
        from voxray.platform import storage

        names = [u.rstrip("/").rsplit("/", 2)[-2] for u in storage.glob(join(str(name_dir), "*", CARD))]
        return sorted(int(n) for n in names if n.isdigit())
    root = Path(name_dir)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / CARD).is_file())


def list_entries(root: str | Path) -> list[dict[str, Any]]:
    """Every version's card under a registry root (or under one `<root>/<name>`), by name then version."""
    if _remote(root):
        return _remote_entries(str(root))
    base = Path(root).expanduser()
    if list_versions(base):
        names = [base]
    else:
        names = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    cards = []
    for name_dir in names:
        for version in list_versions(name_dir):
            try:
                cards.append({**read_card(name_dir / str(version)), "path": str(name_dir / str(version))})
            except (InvalidCard, OSError, yaml.YAMLError) as exc:
                log.warning("skipping %s: %s", name_dir / str(version), exc)
    return cards


def _remote_entries(root: str) -> list[dict[str, Any]]:
    from voxray.platform import storage

    found = storage.glob(join(root, "*", CARD)) + storage.glob(join(root, "*", "*", CARD))
    cards = []
    for uri in found:
        vdir = uri.rsplit("/", 1)[0]
        if not vdir.rsplit("/", 1)[-1].isdigit():
            continue
        try:
            cards.append({**read_card(vdir), "path": vdir})
        except (InvalidCard, OSError, yaml.YAMLError) as exc:
            log.warning("skipping %s: %s", vdir, exc)
    return sorted(cards, key=lambda c: (str(c.get("name")), int(c.get("version") or 0)))


def resolve_version(path: str | Path) -> Path | str:
    """The version folder for `path`: a version folder itself, or `<registry>/<name>` → its latest version (a URI
    stays a URI)."""
    if _remote(path):
        from voxray.platform import storage

        uri = str(path).rstrip("/")
        if storage.exists(join(uri, CARD)):
            return uri
        versions = list_versions(uri)
        if not versions:
            raise ModelNotFound(f"no exported model at {uri!r} (expected {CARD} there or numbered versions under it)",
                                hint="train with `train.export: true`, or point at <registry>/<name> or "
                                     "<registry>/<name>/<version>")
        return join(uri, str(versions[-1]))
    p = Path(path).expanduser()
    if (p / CARD).is_file():
        return p
    versions = list_versions(p)
    if not versions:
        raise ModelNotFound(f"no exported model at {str(p)!r} (expected {CARD} there or numbered versions under it)",
                            hint="train with `train.export: true`, or point at <registry>/<name> or <registry>/<name>/<version>")
    return p / str(versions[-1])


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of `path` (version folder or `<registry>/<name>` → latest), validated for required keys."""
    vdir = resolve_version(path)
    if isinstance(vdir, str):
        from voxray.platform import storage

        raw = storage.read_bytes(join(vdir, CARD))
        if raw is None:
            raise ModelNotFound(f"{join(vdir, CARD)} disappeared while reading it")
        card = yaml.safe_load(raw.decode("utf-8"))
        source = join(vdir, CARD)
    else:
        with open(vdir / CARD, encoding="utf-8") as fh:
            card = yaml.safe_load(fh)
        source = str(vdir / CARD)
    if not isinstance(card, dict):
        raise InvalidCard(f"{source}: expected a mapping, got {type(card).__name__}")
    _check_card(card, source)
    return card


def _check_card(card: dict, source: str) -> None:
    missing = [k for k in REQUIRED_KEYS if card.get(k) is None]
    if missing:
        raise InvalidCard(f"{source}: model card lacks {', '.join(missing)}")
    if len(card["channels"]) != int(card["in_channels"]):
        raise InvalidCard(f"{source}: channels {card['channels']} do not match in_channels {card['in_channels']}")
    if int(card["spatial_dims"]) not in (2, 3) or len(card["patch"]) != int(card["spatial_dims"]):
        raise InvalidCard(f"{source}: patch {card['patch']} does not match spatial_dims {card['spatial_dims']}")


def _plain(value: Any) -> Any:
    """Make a card YAML-safe: tuples → lists, numpy scalars → Python numbers, int-like dict keys kept as ints."""
    if isinstance(value, dict):
        return {_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _key(k: Any) -> int | str:
    if hasattr(k, "item"):
        k = k.item()
    return k if isinstance(k, (int, str)) else str(k)


def _state_dict(model: Any) -> dict:
    """CPU, contiguous, de-duplicated weights of `model` (unwraps DDP's `.module`)."""
    net = getattr(model, "module", model)
    out: dict = {}
    seen: dict[tuple, str] = {}
    for key, tensor in net.state_dict().items():
        ident = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.storage_offset()) if tensor.numel() else None
        if ident is not None and ident in seen:
            continue  # tied weight: load_state_dict(strict=False) refills it from its twin via the module
        if ident is not None:
            seen[ident] = key
        out[key] = tensor.detach().to("cpu").contiguous().clone()
    return out


def export_model(model: Any, card: dict, registry_root: str | Path, name: str) -> Path | str:
    """Write `model`'s weights and `card` as the next version of `<registry_root>/<name>`; returns the version folder.

    `card` needs at least REQUIRED_KEYS (see docs/CONTRACTS.md "Registry"); name, version and created are set here.
    `model` None writes a card-only version (an ensemble: training/ensemble.py).
    """
    from safetensors.torch import save_file

    if _remote(registry_root):
        return _export_remote(model, card, str(registry_root), name)
    name_dir = Path(registry_root).expanduser() / name
    name_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=name_dir))
    try:
        if model is not None:
            save_file(_state_dict(model), str(tmp / WEIGHTS), metadata={"format": "pt", "name": name})
        for _ in range(100):  # concurrent exporters: retry with the next free number
            version = (list_versions(name_dir) or [0])[-1] + 1
            full = _full_card(card, name, version)
            (tmp / CARD).write_text(yaml.safe_dump(full, sort_keys=False), encoding="utf-8")
            try:
                os.rename(tmp, name_dir / str(version))
            except OSError:
                continue
            log.info("exported %s version %d to %s", name, version, name_dir / str(version))
            return name_dir / str(version)
        raise VoxrayError(f"could not claim a version number under {name_dir}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _full_card(card: dict, name: str, version: int) -> dict:
    full = {k: None for k in CARD_KEYS}
    full.update(_plain(card))
    full.update(name=name, version=version, created=_dt.datetime.now(_dt.timezone.utc).isoformat())
    _check_card(full, f"card for {name}")
    return full


def _export_remote(model: Any, card: dict, registry_root: str, name: str) -> str:
    """Upload the next version to an object store: weights first, the card last (its commit). Object stores have
    no atomic rename, so two exporters of the same name at the same moment could pick one number: export once
    per name at a time (a pipeline or a sweep does)."""
    from safetensors.torch import save_file

    from voxray.platform import storage

    name_uri = join(registry_root, name)
    version = (list_versions(name_uri) or [0])[-1] + 1
    vuri = join(name_uri, str(version))
    with tempfile.TemporaryDirectory(prefix="voxray-export-") as tmp:
        if model is not None:
            save_file(_state_dict(model), str(Path(tmp) / WEIGHTS), metadata={"format": "pt", "name": name})
            storage.upload(Path(tmp) / WEIGHTS, join(vuri, WEIGHTS), changed_only=False)
        storage.write_bytes(join(vuri, CARD), yaml.safe_dump(_full_card(card, name, version), sort_keys=False).encode())
    log.info("exported %s version %d to %s", name, version, vuri)
    return vuri


def local_copy(vdir: str | Path) -> Path:
    """A local folder holding version `vdir` (itself when local; a copy in this node's cache for a URI)."""
    if not isinstance(vdir, str) or not is_remote(vdir):
        return Path(vdir)
    from voxray.platform import storage

    local = storage.cache_dir("models", vdir)
    if not ((local / CARD).is_file() and (local / WEIGHTS).is_file()):
        storage.download(vdir, local)
    return local


def build_from_card(card: dict) -> Any:
    """An untrained network with the card's architecture (via the model registry `build_model`)."""
    from pydantic import TypeAdapter

    from voxray.platform.specs.models import ModelSpec
    from voxray.training.models import build_model

    spec = TypeAdapter(ModelSpec).validate_python(card["model"])
    return build_model(spec, in_channels=int(card["in_channels"]), out_channels=int(card["out_channels"]),
                       spatial_dims=int(card["spatial_dims"]), patch=tuple(int(p) for p in card["patch"]))


def load_model(path: str | Path, device: Any = "cpu") -> tuple[Any, dict]:
    """(network in eval mode on `device`, card) for a version folder or `<registry>/<name>` (latest version)."""
    import torch
    from safetensors.torch import load_file

    vdir = local_copy(resolve_version(path))
    card = read_card(vdir)
    if card.get("ensemble"):
        raise InvalidCard(f"{vdir} is an ensemble of {len(card['ensemble'].get('members') or [])} models, not one "
                          f"network", hint="predict with it through voxray.training.predict.Predictor.from_registry")
    if not (vdir / WEIGHTS).is_file():
        raise ModelNotFound(f"{vdir} has a card but no {WEIGHTS}")
    model = build_from_card(card)
    weights = load_file(str(vdir / WEIGHTS), device="cpu")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even with strict=False
        raise InvalidCard(f"{vdir}: weights do not fit the card's architecture ({str(exc).splitlines()[1:3]})") from None
    expected = set(model.state_dict())
    really_missing = [k for k in missing if not _is_tied(model, k, weights)]
    if really_missing or unexpected:
        raise InvalidCard(f"{vdir}: weights do not fit the card's architecture "
                          f"(missing {really_missing[:5]}, unexpected {list(unexpected)[:5]} of {len(expected)} keys)")
    model = model.to(torch.device(device)).eval()
    return model, card


def _is_tied(model: Any, key: str, weights: dict) -> bool:
    """True when `key` is a tied parameter whose storage another loaded key already filled."""
    sd = model.state_dict()
    ptr = sd[key].data_ptr()
    return any(k in weights and sd[k].data_ptr() == ptr for k in sd if k != key)


__all__ = ["export_model", "load_model", "read_card", "resolve_version", "list_versions", "list_entries",
           "build_from_card", "local_copy",
           "ModelNotFound", "InvalidCard", "WEIGHTS", "CARD"]

"""In-process prediction from a registry entry: NIfTI in, mask in the input's own grid out.

One path for the CLI, the server and notebooks, built only from the shared pieces:
`transforms.preprocess_volume` → `inference.sliding_window_predict` → `tasks.decode_logits` →
`transforms.invert_label`. The server splits `predict` into `prepare` (per request), `infer` (one call per
`@serve.batch` batch) and `finish` (per request), so batching changes nothing about the result.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from voxray.platform.errors import DataError
from voxray.training import tasks
from voxray.training.channels import match_channels

log = logging.getLogger(__name__)

SW_BATCH_CAP = 4
"""Stacked volumes per forward pass at most: bigger CPU batches thrash caches (measured in benchmarks/serve.py)."""

__all__ = ["Predictor", "Prepared", "InvalidInput", "volume_from_images", "predict_files", "load_images"]


class InvalidInput(DataError):
    """Input images a model cannot take: wrong dimensionality, mismatched grids, non-finite values."""


@dataclass
class Prepared:
    """One volume on the model's grid: image (C, Z, Y, X) float32 + the record that inverts it."""

    image: torch.Tensor
    record: dict


def volume_from_images(images: Mapping[str, Any] | Any, channels: Sequence[str]) -> Any:
    """A `Volume` from nibabel images: {modality: 3D image} (names matched to `channels`, aliases allowed) or one
    image, 4D with the channels in the model's order on the last axis (3D when the model has one channel).

    Every modality must share one voxel grid (shape and affine); nothing is resampled silently.
    """
    from voxray.preprocessing.datasets import Volume
    from voxray.preprocessing.datasets.nifti_io import same_grid

    if isinstance(images, Mapping):
        order = match_channels(list(images), list(channels))
        ref = images[order[0]]
        for name in order[1:]:
            img = images[name]
            if not same_grid(img.shape, img.affine, ref.shape, ref.affine):
                raise InvalidInput(f"modality {name!r} (shape {tuple(img.shape)}) is not on the grid of {order[0]!r} "
                                   f"(shape {tuple(ref.shape)}); all modalities must share shape and affine")
        arrays = [_as_3d(images[n], n) for n in order]
        data = np.stack(arrays)
    else:
        ref = images
        data = _channels_first(images, len(channels))
    if not np.isfinite(data).all():
        raise InvalidInput("image holds NaN or infinite values")
    return Volume(image=data, label=None, affine=np.asarray(ref.affine, dtype=np.float64), channels=tuple(channels))


def _as_3d(img: Any, name: str) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InvalidInput(f"modality {name!r} must be a 3D image, got shape {tuple(img.shape)}")
    return data


def _channels_first(img: Any, n_channels: int) -> np.ndarray:
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 3 and n_channels == 1:
        return data[None]
    if data.ndim == 4 and data.shape[3] == n_channels:
        return np.moveaxis(data, 3, 0).copy()
    raise InvalidInput(f"a single image must be 4D with {n_channels} channels on the last axis"
                       f"{' (or 3D)' if n_channels == 1 else ''}; got shape {tuple(img.shape)}")


class Predictor:
    """A registry model ready to segment volumes; load once, call many times."""

    def __init__(self, model: torch.nn.Module, card: dict, *, device: str | torch.device = "cpu",
                 overlap: float = 0.25, amp: bool | None = None, sw_batch_size: int = 2) -> None:
        from voxray.preprocessing.transforms import TransformConfig

        self.model = model.eval()
        self.card = card
        self.device = torch.device(device)
        self.overlap = overlap
        self.amp = self.device.type == "cuda" if amp is None else amp
        self.sw_batch_size = sw_batch_size
        self.patch = [int(p) for p in card["patch"]]
        self.transform = TransformConfig.from_dict(card.get("preprocess") or {})

    @classmethod
    def from_registry(cls, path: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> "Predictor":
        """Load `<registry>/<name>[/<version>]` onto `device` (bf16 autocast on CUDA unless amp=False)."""
        from voxray.training.registry import load_model

        model, card = load_model(path, device)
        return cls(model, card, device=device, **kwargs)

    @property
    def channels(self) -> list[str]:
        return list(self.card["channels"])

    def prepare(self, volume: Any) -> Prepared:
        """Forward transform of one `Volume` (channels matched to the card by name, aliases allowed)."""
        from voxray.preprocessing.transforms import preprocess_volume

        image = np.asarray(volume.image)
        names = list(volume.channels or ())
        if names and names != self.channels:
            order = match_channels(names, self.channels)
            image = image[[names.index(n) for n in order]]
        if image.shape[0] != len(self.channels):
            raise InvalidInput(f"volume has {image.shape[0]} channels; the model takes {self.channels}")
        volume = type(volume)(image=image, label=None, affine=volume.affine, channels=tuple(self.channels))
        try:
            pre = preprocess_volume(volume, self.transform)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        return Prepared(image=torch.from_numpy(np.ascontiguousarray(pre.image)), record=pre.record)

    def infer(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits (K, Z, Y, X) per image; images of one shape share forward passes (cross-request batching)."""
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(tuple(img.shape), []).append(i)
        for idx in groups.values():
            if len(idx) == 1 or len(self.patch) != images[idx[0]].ndim - 1:
                for i in idx:
                    out[i] = self._one(images[i])
            else:
                for i, logits in zip(idx, self._stacked(torch.stack([images[i] for i in idx]))):
                    out[i] = logits
        if self.card.get("restrict_to_nonzero"):  # background outside the body, as in validation (see the card)
            out = [tasks.restrict_to_nonzero(lg, img, self.card["task"]) for lg, img in zip(out, images)]
        return out  # type: ignore[return-value]

    def _one(self, image: torch.Tensor) -> torch.Tensor:
        from voxray.training.inference import sliding_window_predict

        return sliding_window_predict(self.model, image, self.patch, self.overlap, sw_batch_size=self.sw_batch_size,
                                      device=self.device, amp=self.amp).cpu()

    @torch.no_grad()
    def _stacked(self, batch: torch.Tensor) -> torch.Tensor:
        """Same-shape images (B, C, *S) through one sliding window: windows of every image share forward passes.

        `sliding_window_predict` takes one image; MONAI's window loop takes a batch, so a batch of requests costs
        about one request's Python overhead. Same windows, same Gaussian blend → the same logits as `_one`.
        """
        from monai.inferers import sliding_window_inference

        from voxray.training.inference import first_head

        def net(x: torch.Tensor) -> torch.Tensor:
            return first_head(self.model(x)).float()

        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if self.amp and self.device.type == "cuda" else nullcontext()
        with ctx:
            sw_batch = self.sw_batch_size * min(len(batch), SW_BATCH_CAP)
            out = sliding_window_inference(batch.to(self.device), self.patch, sw_batch, net, overlap=self.overlap,
                                           mode="gaussian")
        return out.float().cpu()

    def finish(self, logits: torch.Tensor, record: dict) -> np.ndarray:
        """Logits on the model grid → uint8 mask (I, J, K) on the input's original grid."""
        from voxray.preprocessing.transforms import invert_label
        from voxray.training.tasks import decode_logits

        label = decode_logits(logits, self.card["task"], self.card)
        return invert_label(label, record)

    def predict(self, volume: Any) -> np.ndarray:
        """Mask (I, J, K) uint8 in the grid of `volume` (its original shape and affine)."""
        prepared = self.prepare(volume)
        return self.finish(self.infer([prepared.image])[0], prepared.record)

    def predict_many(self, volumes: Sequence[Any]) -> list[np.ndarray]:
        """Masks for several volumes, batching forward passes across same-shape inputs."""
        prepared = [self.prepare(v) for v in volumes]
        logits = self.infer([p.image for p in prepared])
        return [self.finish(lg, p.record) for lg, p in zip(logits, prepared)]


def load_images(inputs: Mapping[str, str | Path] | str | Path) -> Mapping[str, Any] | Any:
    """nibabel images from {modality: path} or one path (4D, or 3D for one-channel models)."""
    import nibabel as nib

    def _load(p: str | Path) -> Any:
        path = Path(p)
        if not path.is_file():
            raise InvalidInput(f"input file {str(path)!r} does not exist")
        try:
            img = nib.load(str(path))
            img.header  # noqa: B018 - force header parsing here, so a non-NIfTI fails with a clear message
            return img
        except Exception as exc:  # nibabel raises many types for unknown formats
            raise InvalidInput(f"{path}: not a readable NIfTI ({type(exc).__name__}: {exc})") from None

    if isinstance(inputs, Mapping):
        return {name: _load(p) for name, p in inputs.items()}
    return _load(inputs)


def mask_image(mask: np.ndarray, like: Any) -> Any:
    """A uint8 NIfTI of `mask` with the geometry (affine, qform/sform) of the input image `like`."""
    import nibabel as nib

    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    img = nib.Nifti1Image(mask.astype(np.uint8), like.affine, header)
    img.header.set_data_shape(mask.shape)
    img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    return img


def predict_files(predictor: Predictor, inputs: Mapping[str, str | Path] | str | Path) -> Any:
    """Predict from files ({modality: path} or one 4D path) → nibabel mask image in the input geometry."""
    images = load_images(inputs)
    volume = volume_from_images(images, predictor.channels)
    like = next(iter(images.values())) if isinstance(images, Mapping) else images
    mask = predictor.predict(volume)
    return mask_image(mask, like)

"""In-process prediction from a registry entry: NIfTI in, mask (and optionally probabilities and uncertainty maps)
in the input's own grid out.

One path for the CLI, the server and notebooks, built only from the shared pieces:
`transforms.preprocess_volume` → `inference.predict_windows` (mirror TTA inside) → `tasks.decode_logits` →
`transforms.invert_label` / `invert_scores`. The server splits `predict` into `prepare` (per request), `run` (one
call per `@serve.batch` batch) and `outputs` (per request), so batching changes nothing about the result. Settings
(window, overlap, windows per forward, device, precision, TTA) come from the card's `inference:` block with
per-call overrides (`predict_settings.resolve_settings`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Mapping, Sequence

import numpy as np
import torch

from voxray.training import tasks
from voxray.training.channels import match_channels
from voxray.training.predict_io import (InvalidInput, load_images, mask_image, map_image, probabilities_image,
                                        reference_image, volume_from_images)
from voxray.training.predict_settings import InferenceSettings, mirror_axes, resolve_settings

log = logging.getLogger(__name__)

SW_BATCH_CAP = 4
"""Requests whose windows share forward passes at most: bigger CPU batches thrash caches (benchmarks/serve.py)."""

OUTPUTS = ("mask", "probabilities", "uncertainty")

__all__ = ["Predictor", "Prepared", "Request", "Inferred", "Prediction", "InvalidInput", "OUTPUTS",
           "volume_from_images", "predict_files", "predict_images", "output_images", "load_images", "mask_image"]

Progress = Callable[[int, int], None]


@dataclass
class Prepared:
    """One volume on the model's grid: image (C, Z, Y, X) float32 + the record that inverts it."""

    image: torch.Tensor
    record: dict
    qa: dict | None = None
    """Input QA report (`qa.check_input`); None with the `off` policy."""


@dataclass(frozen=True)
class Request:
    """One image's inference: mirror axes (None = the predictor's setting) and whether TTA variance is wanted."""

    image: torch.Tensor
    mirror: tuple[int, ...] | None = None
    variance: bool = False


@dataclass
class Inferred:
    """Logits (K, Z, Y, X) on the model grid and, with TTA and variance asked for, the members' variance."""

    logits: torch.Tensor
    variance: torch.Tensor | None = None
    members: int = 1


@dataclass
class Prediction:
    """Outputs on the input grid: mask (I, J, K) uint8; probabilities (K, I, J, K); entropy and TTA variance maps
    (I, J, K); `uncertainty` = the per-case score (see `uncertainty.case_score`) plus the TTA member count and its
    percentile among the validation cases (card `uncertainty_reference`); `qa` = the input QA report."""

    mask: np.ndarray
    uncertainty: dict[str, Any]
    probabilities: np.ndarray | None = None
    maps: list[np.ndarray] = field(default_factory=list)
    qa: dict | None = None


class Predictor:
    """A registry model ready to segment volumes; load once, call many times.

    `overrides` (window, overlap, batch, device, precision, tta) replace the card's `inference:` settings.
    """

    def __init__(self, model: torch.nn.Module | Sequence[torch.nn.Module], card: dict, *,
                 settings: InferenceSettings | None = None, **overrides: Any) -> None:
        from voxray.preprocessing.transforms import TransformConfig

        self.card = card
        self.settings = settings or resolve_settings(card, **overrides)
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        self.models = [m.to(self.settings.device).eval() for m in members]
        """The network, or an ensemble's members (their probabilities are averaged: training/ensemble.py)."""
        self.model = self.models[0]
        self.transform = TransformConfig.from_dict(card.get("preprocess") or {})

    @classmethod
    def from_registry(cls, path: str | Path, **overrides: Any) -> "Predictor":
        """Load `<registry>/<name>[/<version>]` (one model or an ensemble's members) onto the resolved device (the
        card's, or `device=`), as torch modules or onnxruntime sessions (`backend=`, default the card's)."""
        from voxray.training.ensemble import load_networks
        from voxray.training.registry import read_card

        settings = resolve_settings(read_card(path), **overrides)
        models, card = load_networks(path, settings)
        return cls(models, card, settings=settings)

    @property
    def channels(self) -> list[str]:
        return list(self.card["channels"])

    def mirror(self, tta: Any = None) -> tuple[int, ...]:
        """Mirror axes for a request's `tta` (none, mirror, axes; None = the predictor's setting)."""
        return self.settings.mirror if tta is None else mirror_axes(tta, len(self.settings.window))

    def prepare(self, volume: Any) -> Prepared:
        """Forward transform of one `Volume` (channels matched to the card by name, aliases allowed)."""
        from voxray.preprocessing.transforms import preprocess_volume
        from voxray.training.extent import check_extent

        image = np.asarray(volume.image)
        names = list(volume.channels or ())
        if names and names != self.channels:
            order = match_channels(names, self.channels)
            image = image[[names.index(n) for n in order]]
        if image.shape[0] != len(self.channels):
            raise InvalidInput(f"volume has {image.shape[0]} channels; the model takes {self.channels}")
        check_extent(image.shape[1:], volume.affine, self.settings.window, self.transform.spacing)
        dtypes = (getattr(volume, "meta", None) or {}).get("dtypes") or ()
        volume = type(volume)(image=image, label=None, affine=volume.affine, channels=tuple(self.channels))
        try:
            pre = preprocess_volume(volume, self.transform)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        report = None
        if self.settings.qa != "off":  # before inference: a refused input costs no forward pass
            from voxray.training.qa import check_input, enforce

            report = check_input(image, pre.record, self.card.get("fingerprint"), self.channels, dtypes,
                                 self.settings.qa)
            enforce(report)
        return Prepared(image=torch.from_numpy(np.ascontiguousarray(pre.image)), record=pre.record, qa=report)

    def infer(self, images: Sequence[torch.Tensor], *, tta: Any = None,
              progress: Progress | None = None) -> list[torch.Tensor]:
        """Logits (K, Z, Y, X) per image; images of one shape share forward passes (cross-request batching)."""
        mirror = self.mirror(tta)
        return [r.logits for r in self.run([Request(img, mirror) for img in images], progress=progress)]

    def run(self, requests: Sequence[Request], progress: Progress | None = None) -> list[Inferred]:
        """Inference for several requests: requests of one TTA setting share forward passes — same-shape images
        through one window loop, different shapes (3D windows) window by window (`windows.predict_windows_mixed`).
        An ensemble runs its members one after the other and averages their probabilities (`ensemble.combine`).

        Where the card says `restrict_to_nonzero`, voxels outside the image's nonzero region are certain
        background (as in validation) and have no TTA variance.
        """
        s = self.settings
        per_image = [_windows(tuple(r.image.shape), s.window, s.overlap) for r in requests]
        total = sum(per_image) * len(self.models)
        members = [self._run_model(model, requests, per_image, progress, k * sum(per_image), total)
                   for k, model in enumerate(self.models)]
        out = []
        for i, req in enumerate(requests):
            mirror = s.mirror if req.mirror is None else tuple(req.mirror)
            if len(members) == 1:
                logits, var = members[0][i]
            else:
                from voxray.training.ensemble import combine

                logits, var = combine([m[i] for m in members], self.card["task"], req.variance)
            out.append(self._restrict(Inferred(logits, var, len(members) * 2 ** len(mirror)), req.image))
        return out

    def _run_model(self, model: torch.nn.Module, requests: Sequence[Request], per_image: list[int],
                   progress: Progress | None, done: int, total: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(logits, TTA variance or None) per request from one network; progress counts on from `done`."""
        from voxray.training.inference import predict_windows
        from voxray.training.windows import predict_windows_mixed

        s = self.settings
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            mirror = s.mirror if req.mirror is None else tuple(req.mirror)
            shape = tuple(req.image.shape) if len(s.window) == 2 else None  # 3D windows batch across shapes
            groups.setdefault((shape, mirror, req.variance and bool(mirror)), []).append(i)
        out: list[tuple[torch.Tensor, torch.Tensor | None] | None] = [None] * len(requests)
        for key, idx in groups.items():
            _, mirror, variance = key
            for start in range(0, len(idx), SW_BATCH_CAP):
                part = idx[start:start + SW_BATCH_CAP]
                report = None if progress is None else (lambda d, _t, base=done: progress(base + d, total))
                # on the CPU a pass of more windows than the card's batch is slower per window (caches:
                # benchmarks/serve.py forward_16_vs_4), so requests share passes without growing them
                per_pass = s.batch if s.device.type == "cpu" else s.batch * len(part)
                kwargs = dict(batch=per_pass, device=s.device, precision=s.precision, mirror=mirror,
                              variance_task=self.card["task"] if variance else None, progress=report)
                images = [requests[i].image for i in part]
                if len({tuple(img.shape) for img in images}) == 1:
                    res = predict_windows(model, torch.stack(images), s.window, s.overlap, **kwargs)
                    results = [(res.logits[j], None if res.variance is None else res.variance[j])
                               for j in range(len(part))]
                else:
                    results = [(r.logits, r.variance) for r in
                               predict_windows_mixed(model, images, s.window, s.overlap, **kwargs)]
                for i, result in zip(part, results):
                    out[i] = result
                done += sum(per_image[i] for i in part)
        return out  # type: ignore[return-value]

    def _restrict(self, inferred: Inferred, image: torch.Tensor) -> Inferred:
        """The card's rules on the logits: background outside the body (as validation), then the largest component
        of the outputs the export's validation chose (`postprocess.largest_component`)."""
        task = self.card["task"]
        if self.card.get("restrict_to_nonzero"):
            inferred.logits = tasks.restrict_to_nonzero(inferred.logits, image, task)
            if inferred.variance is not None:
                inferred.variance = inferred.variance * tasks.nonzero_mask(image).to(inferred.variance.dtype)
        keep = (self.card.get("postprocess") or {}).get("largest_component")
        if keep:
            from voxray.training.postprocess import apply_largest_component

            inferred.logits = apply_largest_component(inferred.logits, task, tasks.output_names(task, self.card), keep)
        return inferred

    def finish(self, logits: torch.Tensor, record: dict) -> np.ndarray:
        """Logits on the model grid → uint8 mask (I, J, K) on the input's original grid."""
        from voxray.preprocessing.transforms import invert_label

        return invert_label(tasks.decode_logits(logits, self.card["task"], self.card), record)

    def score(self, inferred: Inferred, image: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
        """(label on the model grid, uncertainty score with the TTA member count and, when the card has validation
        scores, the score's percentile among them)."""
        from voxray.training.qa import score_percentile
        from voxray.training.uncertainty import case_score

        task = self.card["task"]
        label = tasks.decode_logits(inferred.logits, task, self.card)
        score = case_score(inferred.logits, label, tasks.nonzero_mask(image), task) | {"tta_members": inferred.members}
        reference = self.card.get("uncertainty_reference")
        if reference:
            score |= {"percentile": score_percentile(score["score"], reference),
                      "reference_cases": int(reference.get("cases") or 0)}
        return label, score

    def outputs(self, inferred: Inferred, prepared: Prepared, want: Collection[str] = ("mask",)) -> Prediction:
        """Mask, uncertainty score, and (when in `want`) probabilities and uncertainty maps on the input grid."""
        from voxray.preprocessing.transforms import invert_label, invert_scores
        from voxray.training.uncertainty import member_variance, predictive_entropy

        task, logits = self.card["task"], inferred.logits
        label, score = self.score(inferred, prepared.image)
        pred = Prediction(mask=invert_label(label, prepared.record), uncertainty=score, qa=prepared.qa)
        if "probabilities" in want or "uncertainty" in want:
            probs = tasks.activate(logits, task)
        if "probabilities" in want:
            k = probs.shape[0]
            fill = [1.0] + [0.0] * (k - 1) if tasks.activation(task) == "softmax" else [0.0] * k
            pred.probabilities = invert_scores(probs.numpy(), prepared.record, fill)
        if "uncertainty" in want:
            maps = [predictive_entropy(probs, task)] + (
                [member_variance(inferred.variance)] if inferred.variance is not None else [])
            pred.maps = list(invert_scores(torch.stack(maps).numpy(), prepared.record, [0.0] * len(maps)))
        return pred

    def predict(self, volume: Any) -> np.ndarray:
        """Mask (I, J, K) uint8 in the grid of `volume` (its original shape and affine)."""
        prepared = self.prepare(volume)
        return self.finish(self.infer([prepared.image])[0], prepared.record)

    def predict_full(self, volume: Any, outputs: Collection[str] = ("mask",), *, tta: Any = None,
                     progress: Progress | None = None) -> Prediction:
        """Every requested output of one volume (see `outputs`); `tta` overrides the predictor's TTA."""
        prepared = self.prepare(volume)
        req = Request(prepared.image, self.mirror(tta), variance="uncertainty" in outputs)
        return self.outputs(self.run([req], progress=progress)[0], prepared, outputs)

    def predict_many(self, volumes: Sequence[Any]) -> list[np.ndarray]:
        """Masks for several volumes, batching forward passes across same-shape inputs."""
        prepared = [self.prepare(v) for v in volumes]
        logits = self.infer([p.image for p in prepared])
        return [self.finish(lg, p.record) for lg, p in zip(logits, prepared)]


def _windows(shape: tuple[int, ...], window: Sequence[int], overlap: float) -> int:
    """Windows of one (C, *S) image: a 2D window on a 3D image slides over each of its Z slices."""
    from voxray.training.inference import count_windows

    slices = shape[1] if len(shape) - 1 > len(window) else 1
    return slices * count_windows(shape[-len(window):], window, overlap)


def predict_images(predictor: Predictor, inputs: Mapping[str, str | Path] | str | Path,
                   outputs: Collection[str] = ("mask",), *, tta: Any = None,
                   progress: Progress | None = None) -> tuple[Prediction, Any]:
    """Predict from files ({modality: path} or one 4D path) → (Prediction, the image whose geometry outputs copy)."""
    images = load_images(inputs)
    volume = volume_from_images(images, predictor.channels)
    return predictor.predict_full(volume, outputs, tta=tta, progress=progress), reference_image(images)


def output_images(prediction: Prediction, like: Any) -> dict[str, Any]:
    """NIfTI images of the prediction on `like`'s geometry: mask, and probabilities / uncertainty when computed."""
    out = {"mask": mask_image(prediction.mask, like)}
    if prediction.probabilities is not None:
        out["probabilities"] = probabilities_image(prediction.probabilities, like)
    if prediction.maps:
        out["uncertainty"] = map_image(prediction.maps, like)
    return out


def predict_files(predictor: Predictor, inputs: Mapping[str, str | Path] | str | Path) -> Any:
    """Predict from files ({modality: path} or one 4D path) → nibabel mask image in the input geometry."""
    prediction, like = predict_images(predictor, inputs)
    return mask_image(prediction.mask, like)

"""Largest-connected-component postprocessing, kept per output only where it raises validation Dice.

nnU-Net's rule: on the validation predictions, remove every connected component of an output but the largest, and
keep that step for the output only if its mean validation Dice improves. The decision is made at export and written
to the model card (`postprocess:`); `Predictor` applies exactly what the card says, so prediction, serving and the
exported figures agree. Removed voxels become background (at the logit level, as `tasks.restrict_to_nonzero`).
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from voxray.training import tasks
from voxray.training.metrics import case_metrics, label_lesions

log = logging.getLogger(__name__)

__all__ = ["largest_component", "apply_largest_component", "decide", "decide_on_store"]

MIN_GAIN = 1e-4
"""Mean validation Dice an output must gain for the step to be kept (ties keep the raw prediction)."""


def largest_component(on: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask (the mask itself when it has at most one)."""
    labels, n = label_lesions(on)
    if n <= 1:
        return on
    return labels == 1 + int(np.bincount(labels.ravel())[1:].argmax())


def apply_largest_component(logits: torch.Tensor, task: str, names: Sequence[str],
                            keep: Iterable[str]) -> torch.Tensor:
    """Logits (K, *S) with every component but the largest of each output in `keep` made certain background."""
    wanted = set(keep) & set(names)
    if not wanted:
        return logits
    out = logits.clone()
    softmax = tasks.activation(task) == "softmax"
    winner = logits.argmax(0) if softmax else None
    for k, name in enumerate(names):
        if name not in wanted or (softmax and k == 0):
            continue
        on = (winner == k) if softmax else logits[k] > 0
        removed = torch.from_numpy(on.numpy() & ~largest_component(on.numpy()))
        if softmax:
            out[:, removed] = -tasks.BACKGROUND_LOGIT
            out[0, removed] = tasks.BACKGROUND_LOGIT
        else:
            out[k, removed] = -tasks.BACKGROUND_LOGIT
    return out


def decide(cases: Iterable[tuple[torch.Tensor, torch.Tensor]], task: str, names: Sequence[str]) -> dict[str, Any]:
    """{"largest_component": [outputs kept], "dice": {output: [without, with]}, "cases": n} from (logits, encoded
    target) pairs: each output is judged on its own mean Dice over the cases."""
    scored = [n for i, n in enumerate(names) if not (task == "labels" and i == 0)]
    before: dict[str, list[float]] = {n: [] for n in scored}
    after: dict[str, list[float]] = {n: [] for n in scored}
    count = 0
    for logits, target in cases:
        count += 1
        raw = case_metrics(logits, target, task, names, [1.0] * (logits.ndim - 1), hd=False)
        lcc = case_metrics(apply_largest_component(logits, task, names, scored), target, task, names,
                           [1.0] * (logits.ndim - 1), hd=False)
        for n in scored:
            before[n].append(raw[f"dice_{n}"])
            after[n].append(lcc[f"dice_{n}"])
    dice = {n: [round(float(np.mean(before[n])), 4), round(float(np.mean(after[n])), 4)] for n in scored if count}
    keep = [n for n in scored if count and np.mean(after[n]) > np.mean(before[n]) + MIN_GAIN]
    return {"largest_component": keep, "dice": dice, "cases": count}


def decide_on_store(model: torch.nn.Module, store: Any, case_ids: Sequence[str], spec: Any, meta: Mapping[str, Any],
                    *, channels: Sequence[int] | None, device: torch.device | str = "cpu") -> dict[str, Any]:
    """`decide` over (at most `validation.max_cases` of) the validation cases, predicted as validation does."""
    from voxray.training.inference import sliding_window_predict
    from voxray.training.validation import load_case, masks_background

    names = tasks.output_names(spec.task, meta)
    restrict = masks_background(store)

    def cases() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for case in list(case_ids)[: spec.validation.max_cases or None]:
            image, label = load_case(store, case, channels)
            logits = sliding_window_predict(model, image, spec.patch, spec.validation.overlap,
                                            sw_batch_size=spec.batch_size, device=device, precision=spec.precision)
            if restrict:
                logits = tasks.restrict_to_nonzero(logits, image, spec.task)
            yield logits, tasks.encode_target(label, spec.task, meta)

    decision = decide(cases(), spec.task, names)
    log.info("postprocessing on %d validation case(s): largest component kept for %s (Dice without → with: %s)",
             decision["cases"], decision["largest_component"] or "no output", decision["dice"])
    return decision

"""Best checkpoint → model registry (`registry.export_model`), with the model card serving needs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.checkpoint import load_state
from voxray.training.predict_settings import inference_card
from voxray.training.validation import masks_background

log = logging.getLogger(__name__)

__all__ = ["model_card", "export_checkpoint"]


def model_card(spec: TrainSpec, store: Any, metrics: Mapping[str, Any], source: Mapping[str, Any],
               lineage: Mapping[str, Any] | None = None) -> dict:
    """Card keys of docs/CONTRACTS.md "Registry" (name/version/created are set by export_model); `lineage`: the
    weights the run started from (train.init), None = from scratch."""
    meta = store.metadata()
    channels = list(spec.channels) if spec.channels else list(store.channels)
    return {"model": spec.model.model_dump(mode="json"), "spatial_dims": len(spec.patch), "patch": list(spec.patch),
            "in_channels": len(channels), "channels": channels,
            "out_channels": tasks.num_outputs(spec.task, meta), "task": spec.task,
            "labels": {int(k): v for k, v in (meta.get("labels") or {}).items()},
            "label_encoding": meta.get("label_encoding", "index"), "regions": meta.get("regions"),
            "slice_axis": meta.get("slice_axis"), "preprocess": store.attrs.get("transform"),
            "restrict_to_nonzero": masks_background(store),
            "inference": inference_card(spec),
            "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
            "source": dict(source), "lineage": dict(lineage) if lineage else None}


def export_checkpoint(checkpoint_dir: str | Path, spec: TrainSpec, store: Any, *, name: str, registry_root: str,
                      metrics: Mapping[str, Any], source: Mapping[str, Any],
                      val_ids: Sequence[str] | None = None) -> Path | str:
    """Rebuild the network, load the checkpoint's weights and write the next registry version; returns its dir.
    With held-out `val_ids`, the card's `postprocess` says for which outputs the largest component is kept."""
    from voxray.training.loop import build_network
    from voxray.training.registry import export_model

    state = load_state(checkpoint_dir)
    card = model_card(spec, store, metrics, {"checkpoint": str(checkpoint_dir), **source}, state.get("lineage"))
    model = build_network(spec, in_channels=card["in_channels"], out_channels=card["out_channels"])
    model.load_state_dict(state["model"])
    from voxray.training.data import channel_indices

    channels = channel_indices(store.channels, spec.channels)
    if val_ids and spec.validation.mode == "split":  # decided on held-out cases only (postprocess.py)
        from voxray.training.postprocess import decide_on_store

        card["postprocess"] = decide_on_store(model.eval(), store, val_ids, spec, store.metadata(), channels=channels)
    add_qa_reference(card, model.eval(), store, val_ids if spec.validation.mode != "train_cases" else None, channels)
    return export_model(model.eval(), card, registry_root, name)


def add_qa_reference(card: dict, model: Any, store: Any, val_ids: Sequence[str] | None,
                     channels: Sequence[int] | None) -> dict:
    """The card's `fingerprint:` (training cases = the store's cases outside `val_ids`) and, with held-out
    `val_ids`, `uncertainty_reference:` (qa_reference.py): what input QA and the score percentile compare with."""
    from voxray.training.predict import Predictor
    from voxray.training.qa_reference import training_fingerprint, validation_reference

    held = set(val_ids or ())
    train_ids = [c for c in store.case_ids() if c not in held]
    card["fingerprint"] = training_fingerprint(store, train_ids, channels, card["channels"])
    if val_ids:
        card["uncertainty_reference"] = validation_reference(Predictor(model, card), store, val_ids, channels)
    return card

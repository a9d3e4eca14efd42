"""Inference fixtures shared by test files: one briefly trained UNet per session (training it once keeps the
slow tests cheap)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from _infer_helpers import recorded_store, train_unet

TRAIN_SEEDS = {f"case{i:02d}": i for i in range(6)}


@pytest.fixture(scope="session")
def trained_unet(tmp_path_factory) -> SimpleNamespace:
    """spec, store (6 training cases with transform records), checkpoint dir and final metrics."""
    store = recorded_store(TRAIN_SEEDS)
    spec, checkpoint, metrics = train_unet(tmp_path_factory.mktemp("run"), store)
    return SimpleNamespace(spec=spec, store=store, checkpoint=checkpoint, metrics=metrics)

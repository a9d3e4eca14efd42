"""Tiny synthetic datasets, written once per session per layout (copy before breaking one)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voxray.preprocessing.synth import synth_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """`synth_root(layout, **kw)` → a shared, read-only synthetic dataset (built on first use)."""
    cache: dict[tuple, Path] = {}

    def build(layout: str, cases: int = 2, test_cases: int = 0, shape=None, seed: int = 0) -> Path:
        key = (layout, cases, test_cases, tuple(shape) if shape else None, seed)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"synth_{layout}")
            cache[key] = synth_dataset(layout, out, cases=cases, seed=seed, shape=shape, test_cases=test_cases)
        return cache[key]

    return build


@pytest.fixture
def broken_copy(synth_root, tmp_path):
    """`broken_copy(layout, **kw)` → a private copy of a synthetic dataset that a test may damage."""

    def copy(layout: str, **kw) -> Path:
        dst = tmp_path / layout
        shutil.copytree(synth_root(layout, **kw), dst)
        return dst

    return copy

"""Training data: case splits, per-worker shards and a background-thread batch loader over the store.

Each Ray Train worker opens the store itself and reads only its shard of training cases (no object-store
round trip for the voxels). Requests are drawn in the training thread (reproducible), reading, augmentation and
target encoding run in a thread pool `prefetch` batches ahead (zarr decompression and MONAI release the GIL for
the heavy parts), so the model rarely waits (measured in benchmarks/train.py: `loader_overhead`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from voxray.platform.errors import DataError
from voxray.platform.specs.train import AugmentSpec, ValidationSpec
from voxray.training.augment import Augmenter
from voxray.training.sampler import PatchSampler, read_patch
from voxray.training.tasks import encode_target

log = logging.getLogger(__name__)

__all__ = ["make_split", "load_or_make_split", "labelled_cases", "check_cases", "shard", "channel_indices",
           "PatchBatches"]


def labelled_cases(store: Any) -> tuple[list[str], list[str]]:
    """(labelled, unlabelled) ok case ids of `store`, from its manifest's `has_label`."""
    ids = store.case_ids()
    flags = {c: bool(store.has_label(c)) for c in ids}
    return [c for c in ids if flags[c]], [c for c in ids if not flags[c]]


def check_cases(n_labelled: int, spec: ValidationSpec, *, store: str = "the store", n_unlabelled: int = 0) -> None:
    """DataError when `n_labelled` cases cannot make the split `spec` asks for (why, and what to change)."""
    where = f"{store} has {n_labelled} labelled case{'s' * (n_labelled != 1)}"
    if n_unlabelled:
        where += f" ({n_unlabelled} unlabelled, not used)"
    if n_labelled == 0:
        raise DataError(f"cannot train: {where}",
                        hint="training needs labels: preprocess a labelled split (preprocess.dataset.split: train)")
    if spec.mode != "split":
        return
    single = ("set train.validation.mode: train_cases (validate on the training case) or none to train on "
              "a single labelled case")
    if n_labelled < 2:
        raise DataError(f"cannot hold out a validation case: {where}; training needs at least 2 cases "
                        f"(one to validate)", hint=single)
    if spec.split is None and spec.folds > n_labelled:
        raise DataError(f"train.validation.folds={spec.folds} is more than the labelled cases: {where}",
                        hint=f"set train.validation.folds to at most {n_labelled} (and fold below it)")


def make_split(case_ids: Sequence[str], spec: ValidationSpec, seed: int) -> dict[str, list[str]]:
    """Deterministic split of labelled cases: k-fold (fold `spec.fold` validates), fixed fractions
    (train/val/test), or, for `mode` train_cases / none, every case trains (and validates / nothing validates)."""
    ids = sorted(case_ids)
    check_cases(len(ids), spec)
    if spec.mode == "train_cases":
        return {"train": ids, "val": list(ids), "test": []}
    if spec.mode == "none":
        return {"train": ids, "val": [], "test": []}
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    if spec.split is None:
        folds = [order[i::spec.folds] for i in range(spec.folds)]
        val = folds[spec.fold]
        return {"train": [c for c in order if c not in val], "val": sorted(val), "test": []}
    n_val = max(1, round(spec.split[1] * len(ids)))
    n_test = round(spec.split[2] * len(ids)) if len(ids) - n_val > 1 else 0
    n_train = max(1, len(ids) - n_val - n_test)
    return {"train": order[:n_train], "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def load_or_make_split(path: Path, store: Any, spec: ValidationSpec, seed: int) -> dict[str, list[str]]:
    """The run's split.json (written once, so a resumed run validates on the same cases), or a new one over the
    store's labelled cases; the unlabelled ones it leaves out are named in one warning when the split is made."""
    if path.exists():
        return json.loads(path.read_text())
    labelled, unlabelled = labelled_cases(store)
    if unlabelled:
        log.warning("%d unlabelled case(s) of %s left out of training and validation: %s", len(unlabelled),
                    getattr(store, "uri", "the store"), ", ".join(unlabelled))
    split = make_split(labelled, spec, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(split, indent=1))
    tmp.replace(path)
    return split


def shard(case_ids: Sequence[str], rank: int, world: int) -> list[str]:
    """This rank's cases (round robin); every rank gets at least one (cases repeat when world > cases)."""
    mine = list(case_ids)[rank::world]
    return mine or [list(case_ids)[rank % len(case_ids)]]


def channel_indices(store_channels: Sequence[str], wanted: Sequence[str] | None) -> list[int] | None:
    """Indices of `wanted` channel names in the store (case-insensitive); None = all channels."""
    if wanted is None:
        return None
    lower = [c.lower() for c in store_channels]
    missing = [w for w in wanted if w.lower() not in lower]
    if missing:
        raise DataError(f"train.channels {missing} are not in the store; it has {list(store_channels)}")
    return [lower.index(w.lower()) for w in wanted]


def _serial_pool(workers: int) -> ThreadPoolExecutor:
    """Loader threads whose torch ops run on one thread each (as DataLoader worker processes do): with intra-op
    parallelism every loader thread's copies and augmentations fork OpenMP teams that spin against the training
    step's on a busy machine (a patch read went from ~30 ms to ~300 ms in benchmarks/store.py). The setting is
    per thread; the global default for threads started later is restored once the workers exist."""
    before = torch.get_num_threads()
    ready = threading.Barrier(workers + 1)

    def init() -> None:
        torch.get_num_threads()  # torch's lazy per-thread init first, or it would reapply the global default later
        torch.set_num_threads(1)
        ready.wait()

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="voxray-loader", initializer=init)
    for _ in range(workers):
        pool.submit(lambda: None)
    ready.wait()
    torch.set_num_threads(before)
    return pool


class PatchBatches:
    """Endless iterator of (image (B, C, *P), target (B, K|1, *P)) batches read by `workers` threads.

    `state()` is the sampler state of the next batch the caller will receive (prefetched batches are replayed
    after a restore), so checkpoints resume the exact patch sequence.
    """

    def __init__(self, store: Any, case_ids: Sequence[str], *, patch: Sequence[int], batch_size: int, task: str,
                 meta: Mapping[str, Any], channels: Sequence[int] | None = None, fg_fraction: float = 0.33,
                 slice_mode: str = "random", augment: AugmentSpec | None = None, workers: int = 2,
                 prefetch: int = 4, seed: int = 0) -> None:
        self.store, self.patch, self.batch_size = store, list(patch), batch_size
        self.task, self.meta, self.channels = task, dict(meta), channels
        self.sampler = PatchSampler(store, case_ids, patch, fg_fraction=fg_fraction, slice_mode=slice_mode,
                                    seed=seed)
        self.augment = Augmenter(augment or AugmentSpec(enabled=False), len(patch))
        self.prefetch = max(prefetch, 1)
        self.pool = _serial_pool(workers) if workers else None
        self.queue: deque[tuple[dict, list[Future] | list]] = deque()

    def _sample(self, req) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = read_patch(self.store, req, self.sampler.box, self.channels)
        if len(self.patch) == 2:
            image, label = image[:, 0], label[0]
        image_t, label_t = self.augment(image, label, req.seed)
        return image_t, encode_target(label_t, self.task, self.meta)

    def _submit(self) -> None:
        state = self.sampler.state()
        reqs = [self.sampler.draw() for _ in range(self.batch_size)]
        jobs = [self.pool.submit(self._sample, r) for r in reqs] if self.pool else reqs
        self.queue.append((state, jobs))

    def state(self) -> dict:
        return self.queue[0][0] if self.queue else self.sampler.state()

    def set_state(self, state: dict) -> None:
        for _, jobs in self.queue:
            for j in jobs:
                if isinstance(j, Future):
                    j.cancel()
        self.queue.clear()
        self.sampler.set_state(state)

    def __iter__(self) -> "PatchBatches":
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        while len(self.queue) < self.prefetch:
            self._submit()
        _, jobs = self.queue.popleft()
        samples = [j.result() if isinstance(j, Future) else self._sample(j) for j in jobs]
        self._submit()
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

"""Patch sampling over a store: where to read, decided in one thread from one seeded generator.

`PatchSampler.draw()` returns a `PatchRequest` (case, start corner, augmentation seed); `read_patch` turns it into
arrays. Drawing is cheap and sequential (so a run is reproducible whatever the loader's thread count); reading is
what the loader's threads do. 3D: random or foreground-centred boxes (class chosen uniformly among the case's
foreground classes, via `store.fg_coords`). 2D: boxes of one slice along the store's first spatial axis, either
random slices or each case's most populated slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from voxray.platform.errors import DataError

__all__ = ["PatchRequest", "PatchSampler", "read_patch", "most_populated_slice"]


@dataclass(frozen=True)
class PatchRequest:
    case_id: str
    start: tuple[int, int, int]
    """Corner (z, y, x) in the case's volume; may be negative or run past the end (zero padding)."""
    seed: int
    """Seed of this patch's augmentation."""


def most_populated_slice(fg: dict[int, np.ndarray], depth: int) -> int:
    """Slice index (first spatial axis) with the most foreground coordinates; the middle slice when none."""
    coords = [c for c in fg.values() if len(c)]
    if not coords:
        return depth // 2
    z = np.concatenate(coords)[:, 0]
    return int(np.bincount(z, minlength=depth).argmax())


class PatchSampler:
    """Draws patch requests for `case_ids` of `store` (a `voxray.preprocessing.store.Store` or a look-alike).

    `patch` has 3 entries (3D) or 2 (2D slices); `slice_mode` is `random` or `most_populated` (2D only).
    """

    def __init__(self, store: Any, case_ids: Sequence[str], patch: Sequence[int], *, fg_fraction: float = 0.33,
                 slice_mode: str = "random", seed: int = 0) -> None:
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        if len(patch) not in (2, 3):
            raise ValueError(f"patch must have 2 or 3 entries, got {list(patch)}")
        if slice_mode not in ("random", "most_populated"):
            raise ValueError(f"slice_mode must be 'random' or 'most_populated', got {slice_mode!r}")
        self.case_ids = list(case_ids)
        self.box = (1, *patch) if len(patch) == 2 else tuple(patch)
        self.fg_fraction, self.slice_mode = fg_fraction, slice_mode
        self.rng = np.random.default_rng(seed)
        self.shapes = {c: tuple(store.image(c).shape[1:]) for c in self.case_ids}
        self.fg = {c: {k: v for k, v in store.fg_coords(c).items() if len(v)} for c in self.case_ids}
        self.fixed_slice = ({c: most_populated_slice(self.fg[c], self.shapes[c][0]) for c in self.case_ids}
                            if len(patch) == 2 and slice_mode == "most_populated" else {})

    def state(self) -> dict:
        """The generator state (JSON-serialisable): restoring it replays the same patches."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def _centre(self, case: str) -> np.ndarray | None:
        fg = self.fg[case]
        if not fg or self.rng.random() >= self.fg_fraction:
            return None
        coords = fg[sorted(fg)[int(self.rng.integers(len(fg)))]]
        return coords[int(self.rng.integers(len(coords)))].astype(np.int64)

    def draw(self) -> PatchRequest:
        case = self.case_ids[int(self.rng.integers(len(self.case_ids)))]
        shape = self.shapes[case]
        centre = self._centre(case)
        start = []
        for ax, (n, p) in enumerate(zip(shape, self.box)):
            if centre is not None:
                lo = int(centre[ax]) - p // 2
                s = min(max(lo, 0), max(n - p, 0)) if n >= p else (n - p) // 2
            else:
                s = int(self.rng.integers(0, n - p + 1)) if n >= p else (n - p) // 2
            start.append(s)
        if case in self.fixed_slice:
            start[0] = self.fixed_slice[case]
        seed = int(self.rng.integers(2**31 - 1))
        return PatchRequest(case, (start[0], start[1], start[2]), seed)


def read_patch(store: Any, req: PatchRequest, box: Sequence[int],
               channels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(image float32 (C, *box), label uint8 (*box)) for a request; a 2D box (1, y, x) keeps its unit axis.

    Only `channels` (indices into the store's channels) are copied; padding and the float16 → float32 cast happen in
    the one copy out of each decoded chunk (`voxray.preprocessing.store.boxes.read_box`).
    """
    from voxray.preprocessing.store.boxes import read_box

    label_arr = store.label(req.case_id)
    if label_arr is None:  # splits hold labelled cases only: an all-background stand-in would teach "no lesion"
        raise DataError(f"case {req.case_id!r} has no label; training reads labelled cases only")
    image = read_box(store.image(req.case_id), req.start, box, lead=1, dtype=np.float32, channels=channels)
    label = read_box(label_arr, req.start, box, lead=0, dtype=np.uint8)
    return image, label

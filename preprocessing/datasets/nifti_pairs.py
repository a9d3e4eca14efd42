"""Any other NIfTI dataset: one glob per modality and one for labels, case ids from a regex on the file path."""

from __future__ import annotations

import re
from pathlib import Path

from voxray.platform.errors import DataError
from voxray.preprocessing.datasets.base import (Case, DatasetAdapter, Split, Volume, no_cases, require_dir,
                                                safe_case_id, visible)
from voxray.preprocessing.datasets.nifti_io import label_on_grid, stack_channels


class NiftiPairsAdapter(DatasetAdapter):
    """Generic layout. `images` maps modality → glob (relative to the root), `label` is a glob, and `case_id_regex`
    has one group that extracts the case id from the root-relative path (default: the file's parent folder).

    Channels whose grid differs from the reference modality (default: the first) are resampled onto it.
    `labels` (value → name) is optional; without it label values are not checked and the map is {1: foreground}.
    """

    layout = "nifti_pairs"
    options = ("split", "images", "label", "case_id_regex", "reference_modality", "labels")

    def __init__(self, images: dict[str, str] | None = None, label: str | None = None,
                 case_id_regex: str | None = None, reference_modality: str | None = None,
                 labels: dict[int, str] | None = None, split: Split = "train") -> None:
        super().__init__(split)
        if not images:
            raise ValueError("layout 'nifti_pairs' needs `images` (modality → glob), e.g. {'T1': '*/t1.nii.gz'}")
        self.images = dict(images)
        self.channels = tuple(self.images)
        self.label_glob = label
        try:
            self.case_id_regex = re.compile(case_id_regex) if case_id_regex else None
        except re.error as exc:
            raise ValueError(f"case_id_regex {case_id_regex!r} is not a valid regex: {exc}") from None
        if self.case_id_regex is not None and self.case_id_regex.groups != 1:
            raise ValueError(f"case_id_regex {case_id_regex!r} must have exactly one group (the case id)")
        self.reference_modality = reference_modality or self.channels[0]
        if self.reference_modality not in self.channels:
            raise ValueError(f"reference_modality {reference_modality!r} is not one of {list(self.channels)}")
        self._checked = labels is not None
        self.labels = {0: "background", **{int(k): v for k, v in (labels or {1: "foreground"}).items()}}

    def _case_id(self, root: Path, path: Path) -> str:
        rel = path.relative_to(root).as_posix()
        if self.case_id_regex is None:
            raw = path.parent.name if path.parent != root else re.sub(r"\.nii(\.gz)?$", "", path.name)
        else:
            match = self.case_id_regex.search(rel)
            if match is None:
                raise DataError(f"case_id_regex {self.case_id_regex.pattern!r} does not match {rel} (under {root})")
            raw = match.group(1)
        return safe_case_id(raw, path)  # made safe before indexing, so ids that collide once safe are caught

    def _index(self, root: Path, pattern: str) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for path in visible(sorted(p for p in root.glob(pattern) if p.is_file())):
            cid = self._case_id(root, path)
            if cid in out:
                raise DataError(f"case id {cid!r} matches both {out[cid]} and {path} for glob {pattern!r}; "
                                "set case_id_regex to tell them apart")
            out[cid] = path
        return out

    def discover(self, root: str | Path) -> list[Case]:
        root = require_dir(root, self.layout)
        found = {m: self._index(root, g) for m, g in self.images.items()}
        if not any(found.values()):
            raise DataError(f"no file under {root} matches the image globs {self.images}; is this the right root?")
        labels = self._index(root, self.label_glob) if self.label_glob and self.split != "test" else {}
        cases = [self._case(cid, found, labels) for cid in sorted(set().union(*found.values()))]
        if self.split == "test":
            with_label = set(self._index(root, self.label_glob)) if self.label_glob else set()
            cases = [c for c in cases if c.case_id not in with_label]
        if not cases:
            raise no_cases(root, self.layout, f"no case for split {self.split!r}")
        return cases

    def _case(self, cid: str, found: dict[str, dict[str, Path]], labels: dict[str, Path]) -> Case:
        images = {m: found[m][cid] for m in self.channels if cid in found[m]}
        problems = [f"missing {m} image (glob {self.images[m]!r})" for m in self.channels if cid not in found[m]]
        label = labels.get(cid)
        if self.label_glob and self.split == "train" and label is None:
            problems.append(f"missing label (glob {self.label_glob!r})")
        meta = {"problem_file": str(next(iter(images.values()), cid))} if problems else {}
        return Case(cid, images, label, meta, tuple(problems))

    def load(self, case: Case) -> Volume:
        self.check_case(case)
        image, affine, meta = stack_channels(case.case_id, case.images, self.reference_modality, resample=True)
        label = None
        if case.label is not None:
            allowed = set(self.labels) if self._checked else None
            label = label_on_grid(case.case_id, case.label, allowed, image.shape[1:], affine, resample=True)
        return Volume(image, label, affine, self.channels, meta)

"""The dataset contract (docs/CONTRACTS.md "Datasets"): `Case`, `Volume`, `CaseError` and the adapter base class.

Discovery is path work only (no pixel decode) so a 1,000-case dataset lists in well under a second and the store can
checksum and schedule cases before any task decodes one. Problems found while listing (a missing modality, a missing
label) are recorded on the `Case`, so one bad case never hides the others; problems found while decoding raise
`CaseError` naming the file and the reason.
"""

from __future__ import annotations

import abc
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from voxray.platform.errors import DataError

log = logging.getLogger(__name__)

_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
MAX_CASE_ID = 128

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")
LabelEncoding = Literal["index", "bitmask"]


@dataclass(frozen=True)
class Case:
    """One case as found on disk: modality → file (or ordered slice files), label file(s), adapter specifics."""

    case_id: str
    images: dict[str, Path | tuple[Path, ...]]
    label: Path | tuple[Path, ...] | None
    meta: dict = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The one case-id rule, applied here so every adapter (and every future one) gets it.
        files = self.files()
        safe = safe_case_id(self.case_id, files[0] if files else self.meta.get("problem_file", "?"))
        if safe != self.case_id:
            object.__setattr__(self, "meta", {**self.meta, "source_case_id": self.case_id})
            object.__setattr__(self, "case_id", safe)

    @property
    def ok(self) -> bool:
        """True when discovery found nothing wrong (the case can be loaded)."""
        return not self.problems

    def files(self) -> list[Path]:
        """Every source file of the case (images then label), e.g. for checksums."""
        out: list[Path] = []
        for value in [*self.images.values(), self.label]:
            if value is None:
                continue
            out.extend(value if isinstance(value, tuple) else (value,))
        return out


@dataclass
class Volume:
    """A decoded case: channels-first float32 image in file voxel order, uint8 label, voxel → world (RAS mm) affine.

    `meta` carries what the adapter did while loading (e.g. which channels were resampled onto which grid) so the
    store can record it; it is JSON-serialisable.
    """

    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    channels: tuple[str, ...]
    meta: dict = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along the three voxel axes in mm (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def safe_case_id(raw: str, source: str | Path) -> str:
    """The case-id rule. Ids name store nodes and row files (`cases/<id>`, `_rows/<id>.json`, `fg/<id>`), so an id is
    one path segment of letters, digits, `.`, `_`, `-` that starts with a letter or digit: runs of other characters
    (`/`, spaces, `:`…) become `_`, leading `._-` go. An id with nothing left, or longer than MAX_CASE_ID, is a
    DataError naming `source`, the file it came from."""
    safe = _UNSAFE_ID.sub("_", str(raw)).lstrip("._-")
    if not safe:
        raise DataError(f"{source}: case id {raw!r} has no ASCII letter or digit to keep, so it cannot name a store "
                        "entry",
                        hint="change case_id_regex (or the file/folder name) so the id is a name such as 'case_001'")
    if len(safe) > MAX_CASE_ID:
        raise DataError(f"{source}: case id {raw!r} is {len(safe)} characters long; at most {MAX_CASE_ID} are allowed",
                        hint="change case_id_regex to capture a shorter part of the path")
    return safe


def unique_ids(cases: list[Case]) -> list[Case]:
    """`cases`, or a DataError naming both sources when two cases share an id (e.g. `a/b` and `a_b` once made
    safe): one would overwrite the other in the store."""
    seen: dict[str, Case] = {}
    for case in cases:
        other = seen.setdefault(case.case_id, case)
        if other is not case:
            raise DataError(f"two cases have the id {case.case_id!r} (from {_source(other)} and {_source(case)}); "
                            "case ids must be unique", hint="change case_id_regex or rename one of them")
    return cases


def _source(case: Case) -> str:
    files = case.files()
    return str(files[0]) if files else repr(case.meta.get("source_case_id", case.case_id))


class CaseError(DataError):
    """One case cannot be decoded: names the case, the file and the reason. The run goes on without it."""

    def __init__(self, case_id: str, file: str | Path, reason: str) -> None:
        self.case_id = case_id
        self.file = str(file)
        self.reason = reason
        super().__init__(f"case {case_id}: {file}: {reason}")

    def __reduce__(self):  # picklable across Ray tasks despite the 3-argument constructor
        return (type(self), (self.case_id, self.file, self.reason))


class DatasetAdapter(abc.ABC):
    """Base class of the per-layout adapters: class attributes describe the label convention, methods do the I/O."""

    layout: ClassVar[str] = ""
    channels: tuple[str, ...] = ()
    labels: dict[int, str] = {}
    label_encoding: LabelEncoding = "index"
    regions: dict[str, list[int]] | None = None
    slice_axis: int | None = None
    options: ClassVar[tuple[str, ...]] = ("split",)
    """Keyword options `get_adapter` accepts for this layout."""

    def __init__(self, split: Split = "train") -> None:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {list(SPLITS)}")
        self.split = split

    @abc.abstractmethod
    def discover(self, root: str | Path) -> list[Case]:
        """List the cases under `root` (sorted by id) without decoding pixels; DataError for a wrong root."""

    @abc.abstractmethod
    def load(self, case: Case) -> Volume:
        """Decode one case; CaseError naming the file and the reason for anything wrong."""

    def metadata(self) -> dict:
        """The label convention the store copies into its root attrs and training tasks read back."""
        return {
            "layout": self.layout,
            "channels": list(self.channels),
            "labels": {int(k): v for k, v in self.labels.items()},
            "label_encoding": self.label_encoding,
            "regions": None if self.regions is None else {k: list(v) for k, v in self.regions.items()},
            "slice_axis": self.slice_axis,
        }

    def check_case(self, case: Case) -> None:
        """Refuse to load a case that discovery already found broken (its first problem is the reason)."""
        if case.problems:
            culprit = case.meta.get("problem_file", case.case_id)
            raise CaseError(case.case_id, culprit, "; ".join(case.problems))


def require_dir(root: str | Path, layout: str, sub: str | None = None, hint: str = "") -> Path:
    """The dataset root (or `root/sub`) as a Path, or a DataError that says what was expected there."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a folder (layout {layout!r})")
    if sub is not None and not (root / sub).is_dir():
        raise DataError(f"no {sub}/ under {root}; is this an {hint or layout} layout?")
    return root


def visible(paths: list[Path]) -> list[Path]:
    """Drop macOS resource forks (`._*`) and hidden files that real archives carry next to the data."""
    return [p for p in paths if not p.name.startswith(".")]


def nii_files(folder: Path) -> list[Path]:
    """The visible `.nii.gz` / `.nii` files of one folder, sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(visible([p for p in folder.iterdir() if p.name.endswith((".nii.gz", ".nii")) and p.is_file()]))


def strip_nii(name: str) -> str:
    """`BRATS_001.nii.gz` → `BRATS_001`."""
    return re.sub(r"\.nii(\.gz)?$", "", name)


def no_cases(root: Path, layout: str, what: str) -> DataError:
    """The error for a root that has the right shape but holds no case."""
    return DataError(f"no cases found under {root} ({what}); is this a {layout} layout?")


def build_case(case_id: str, images: dict[str, Path], label: Path | None, split: str, meta: dict | None = None) -> Case:
    """A multi-file case with its discovery problems: missing image files, and a missing label when the split
    wants one ("train"). "test" drops labels; "all" keeps a label only where it exists."""
    meta = dict(meta or {})
    meta["has_label_file"] = label is not None and label.is_file()
    missing = [path for path in images.values() if not path.is_file()]
    problems = [f"missing {name} image {path}" for name, path in images.items() if not path.is_file()]
    if split == "test":
        label = None
    elif label is not None and not label.is_file():
        if split == "train":
            problems.append(f"missing label {label}")
            missing.append(label)
        label = None
    if missing:
        meta["problem_file"] = str(missing[0])
    return Case(case_id, dict(images), label, meta, tuple(problems))


def unlabelled(cases: list[Case]) -> list[Case]:
    """Split "test" of layouts without a separate test part: the cases that have no label file."""
    return [c for c in cases if not c.meta.get("has_label_file")]

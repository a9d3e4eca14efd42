"""What `voxray plan` knows about a dataset: per-case spacings and extents, channels, labels, intensities.

From a raw dataset the geometry comes from NIfTI headers (no pixel decode, so planning a 1,000-case dataset takes
seconds); pixels are read only where a decision needs them (CT intensity windows) or a layout has no header with a
spacing (TIF/PNG slices). From a store it comes from `fingerprint.json`, whose shapes are already cropped to the
body. Arrays are (Z, Y, X) in RAS order, as everywhere in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxray.platform.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["Fingerprint", "from_dataset", "from_store", "fingerprint_for", "dataset_fingerprint", "header_geometry",
           "CT_NAMES"]

CT_NAMES = ("ct", "cect", "nct")
"""Channel names read as CT (case-insensitive); every other channel is MR (all bundled layouts are MR)."""


@dataclass
class Fingerprint:
    """Dataset facts the planner decides from."""

    channels: list[str]
    spacings: np.ndarray
    """(N, 3) source spacing per case, mm, (z, y, x)."""
    shapes: np.ndarray
    """(N, 3) voxels per case on its source grid, cropped to the body when `cropped`."""
    cropped: bool
    source: str
    """"headers", "decoded" or "store" — says how the numbers were obtained."""
    meta: dict
    """Adapter metadata: layout, labels, label_encoding, regions, slice_axis."""
    intensity: dict[str, dict] = field(default_factory=dict)
    """Per channel foreground statistics (mean, std, percentile_00_5, percentile_99_5) when read."""
    dataset: dict | None = None
    """The preprocess `dataset` section, when planned from a dataset (or recovered from a store's resolved job)."""
    store: str | None = None
    store_transform: dict | None = None
    labelled: int = 0

    @property
    def cases(self) -> int:
        return len(self.spacings)

    @property
    def extents_mm(self) -> np.ndarray:
        """(N, 3) physical size per case, mm."""
        return self.shapes * self.spacings

    def modality(self, channel: str, overrides: dict[str, str] | None = None) -> str:
        """"CT" or "MR" for a channel: an explicit `--modality` override, else the channel's name."""
        if overrides and channel in overrides:
            return overrides[channel].upper()
        return "CT" if channel.lower() in CT_NAMES else "MR"


def header_geometry(path: str | Path) -> tuple[list[int], list[float]]:
    """(shape, spacing) in RAS (z, y, x) order from a NIfTI header alone."""
    import nibabel as nib

    from voxray.preprocessing.resample import ras_grid

    img = nib.load(str(path))
    return ras_grid(img.shape[:3], img.affine)


def _reference_file(adapter: Any, case: Any) -> Path | None:
    """The file whose grid the adapter loads the case on, when it is a NIfTI (else None: decode)."""
    key = next(iter(case.images)) if len(case.images) == 1 else getattr(adapter, "reference_modality", None)
    path = case.images.get(key) if key else None
    if isinstance(path, Path) and path.name.endswith((".nii", ".nii.gz")):
        return path
    return None


def _geometry_by_decoding(volume: Any) -> tuple[list[int], list[float]]:
    from voxray.preprocessing.resample import to_ras_zyx

    _, _, geom = to_ras_zyx(volume.image[:1], None, np.asarray(volume.affine, dtype=np.float64))
    return geom["ras_shape_zyx"], geom["spacing_zyx"]


def _stats(values: np.ndarray) -> dict:
    p = np.percentile(values, (0.5, 50.0, 99.5))
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "percentile_00_5": float(p[0]), "median": float(p[1]), "percentile_99_5": float(p[2])}


def _intensities(adapter: Any, cases: list, channels: list[str], limit: int, per_case: int = 20000) -> dict:
    """Foreground (label > 0, else nonzero) intensity statistics per channel from the first `limit` cases."""
    from voxray.preprocessing.store.fingerprint import intensity_samples

    pools: list[list[np.ndarray]] = [[] for _ in channels]
    for n, case in enumerate(cases[:limit]):
        vol = adapter.load(case)
        mask = vol.label > 0 if vol.label is not None and (vol.label > 0).any() else np.any(vol.image != 0, axis=0)
        for c, vals in enumerate(intensity_samples(vol.image, mask, per_case, seed=n)):
            pools[c].append(np.asarray(vals))
    return {name: _stats(np.concatenate(pool)) for name, pool in zip(channels, pools) if pool}


def from_dataset(dataset: Any, *, intensity_cases: int = 0, max_cases: int | None = None) -> Fingerprint:
    """Fingerprint of a `DatasetSpec`: geometry from headers, intensities from `intensity_cases` decoded cases."""
    from voxray.preprocessing.datasets import adapter_from_spec

    adapter = adapter_from_spec(dataset)
    cases = sorted((c for c in adapter.discover(dataset.root) if c.ok), key=lambda c: c.case_id)[:max_cases]
    if not cases:
        raise DataError(f"{dataset.root}: no loadable cases for layout {dataset.layout!r}")
    meta = adapter.metadata()
    shapes, spacings, decoded = [], [], 0
    for case in cases:
        ref = _reference_file(adapter, case)
        if ref is not None:
            shape, spacing = header_geometry(ref)
        else:
            shape, spacing = _geometry_by_decoding(adapter.load(case))
            decoded += 1
        shapes.append(shape)
        spacings.append(spacing)
    channels = list(meta["channels"]) or list(cases[0].images)
    intensity = _intensities(adapter, cases, channels, intensity_cases) if intensity_cases else {}
    return Fingerprint(channels=channels, spacings=np.asarray(spacings, float), shapes=np.asarray(shapes, float),
                       cropped=False, source="decoded" if decoded else "headers", meta=meta, intensity=intensity,
                       dataset=dataset.model_dump(mode="json", exclude_none=True),
                       labelled=sum(c.label is not None for c in cases))


def from_store(uri: str) -> Fingerprint:
    """Fingerprint of a converted store (`fingerprint.json`: cropped shapes, foreground intensities)."""
    import yaml

    from voxray.platform.specs.loader import RESOLVED_NAME
    from voxray.preprocessing.store import Store

    store = Store.open(uri)
    fp = store.fingerprint()
    per_case = fp.get("per_case") or {}
    if not per_case:
        raise DataError(f"{uri}: fingerprint.json lists no converted case")
    transform = dict(store.attrs.get("transform") or {})
    target = transform.get("spacing")
    spacings, shapes = [], []
    for row in per_case.values():
        src = np.asarray(row["original_spacing"], float)
        stored = np.asarray(target[::-1], float) if target else src
        shapes.append(np.asarray(row["shape"], float) * stored / src)  # cropped extent in source voxels
        spacings.append(src)
    dataset = None
    if store._files.exists(RESOLVED_NAME):
        resolved = yaml.safe_load(store._files.read_bytes(RESOLVED_NAME)) or {}
        dataset = (resolved.get("preprocess") or {}).get("dataset")
    return Fingerprint(channels=list(fp.get("channels") or store.channels), spacings=np.asarray(spacings),
                       shapes=np.asarray(shapes), cropped=bool(transform.get("crop_nonzero", True)), source="store",
                       meta=store.metadata(), intensity=dict(fp.get("intensity_foreground") or {}), dataset=dataset,
                       store=uri, store_transform=transform, labelled=len(store.labelled_case_ids()))


def fingerprint_for(path: str | Path, layout: str | None, options: dict | None = None,
                    modalities: dict[str, str] | None = None, intensity_cases: int | None = None) -> Fingerprint:
    """A store (`path` holds fingerprint.json and no `layout` is given) or a dataset root in `layout`.

    CT channels need foreground intensities: unless `intensity_cases` says otherwise, up to 10 cases are decoded
    for them; MR-only datasets are planned from headers alone."""
    from voxray.platform.specs.preprocess import DatasetSpec

    if layout is None:
        if "://" in str(path) or (Path(path) / "fingerprint.json").is_file():
            return from_store(str(path))
        raise DataError(f"{path}: not a store (no fingerprint.json) and no --layout given",
                        hint="voxray plan DATASET_ROOT --layout msd_brats (or a store made by voxray preprocess)")
    dataset = DatasetSpec.model_validate({"layout": layout, "root": str(Path(path).resolve()), **(options or {})})
    return dataset_fingerprint(dataset, modalities, intensity_cases)


def dataset_fingerprint(dataset: Any, modalities: dict[str, str] | None = None,
                        intensity_cases: int | None = None) -> Fingerprint:
    """A `DatasetSpec`'s fingerprint; CT channels get 10 decoded cases unless `intensity_cases` says otherwise."""
    fp = from_dataset(dataset, intensity_cases=intensity_cases or 0)
    if intensity_cases is None and any(fp.modality(c, modalities) == "CT" for c in fp.channels):
        fp = from_dataset(dataset, intensity_cases=10)
    return fp

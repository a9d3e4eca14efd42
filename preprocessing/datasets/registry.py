"""Layout name → adapter class, and construction from keyword options or a `dataset:` spec section."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from voxray.preprocessing.datasets.base import DatasetAdapter

if TYPE_CHECKING:
    from voxray.platform.specs.preprocess import DatasetSpec

_ADAPTERS: dict[str, str] = {
    "msd_brats": "voxray.preprocessing.datasets.msd_brats:MsdBratsAdapter",
    "isles2022": "voxray.preprocessing.datasets.isles2022:Isles2022Adapter",
    "brats2023": "voxray.preprocessing.datasets.brats2023:Brats2023Adapter",
    "ibsr18": "voxray.preprocessing.datasets.ibsr18:Ibsr18Adapter",
    "lgg_tif": "voxray.preprocessing.datasets.lgg_tif:LggTifAdapter",
    "uwmadison_gi": "voxray.preprocessing.datasets.uwmadison_gi:UwMadisonGiAdapter",
    "nifti_pairs": "voxray.preprocessing.datasets.nifti_pairs:NiftiPairsAdapter",
}

LAYOUTS: tuple[str, ...] = tuple(_ADAPTERS)


def adapter_class(layout: str) -> type[DatasetAdapter]:
    """The adapter class for `layout` (imported on demand)."""
    if layout not in _ADAPTERS:
        raise ValueError(f"unknown dataset layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    module, name = _ADAPTERS[layout].split(":")
    return getattr(importlib.import_module(module), name)


def get_adapter(layout: str, **options: Any) -> DatasetAdapter:
    """Build the adapter for `layout`; options a layout does not take are a ValueError naming the allowed ones.

    Options that are None are ignored, so a `DatasetSpec` dump can be passed as is.
    """
    cls = adapter_class(layout)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(cls.options))
    if unknown:
        raise ValueError(f"layout {layout!r} does not take option(s) {unknown}; it takes {list(cls.options)}")
    return cls(**given)


def adapter_from_spec(spec: "DatasetSpec") -> DatasetAdapter:
    """The adapter a `preprocess.dataset` spec section describes (its `root` is passed to `discover`)."""
    options = spec.model_dump(exclude={"layout", "root"}, exclude_none=True)
    if options.get("split") == "train":
        options.pop("split")  # the default; accepted by every layout
    return get_adapter(spec.layout, **options)

"""Dataset adapters: one per on-disk layout, each turning a dataset root into `Case`s and `Volume`s.

See docs/CONTRACTS.md "Datasets" and docs/datasets.md for the layouts and label maps.
"""

from voxray.preprocessing.datasets.base import Case, CaseError, DatasetAdapter, Volume
from voxray.preprocessing.datasets.registry import LAYOUTS, adapter_class, adapter_from_spec, get_adapter

__all__ = ["Case", "CaseError", "DatasetAdapter", "Volume", "LAYOUTS", "adapter_class", "adapter_from_spec",
           "get_adapter"]

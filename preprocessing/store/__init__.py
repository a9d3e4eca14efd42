"""The zarr v3 store: writer (per-case, commit by manifest row), reader `Store`, manifest, fingerprint, verify."""

from voxray.preprocessing.store.reader import Store
from voxray.preprocessing.store.writer import WriteOptions, create_store, write_case

__all__ = ["Store", "WriteOptions", "create_store", "write_case"]

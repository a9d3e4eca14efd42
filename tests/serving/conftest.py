"""Serving fixtures: a tiny real registry model (MONAI UNet, 2 channels, 16³ patch) and small NIfTI volumes."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

CHANNELS = ["flair", "t1gd"]
SHAPE = (22, 20, 18)


def make_card() -> dict:
    from voxray.preprocessing.transforms import TransformConfig

    return {
        "model": {"name": "unet", "channels": [4, 8], "num_res_units": 0},
        "spatial_dims": 3, "patch": [16, 16, 16], "in_channels": 2, "channels": CHANNELS, "out_channels": 3,
        "task": "labels", "labels": {0: "background", 1: "edema", 2: "tumour"}, "label_encoding": "index",
        "regions": None, "slice_axis": None, "preprocess": TransformConfig().to_dict(),
        "metrics": {"val/dice_mean": 0.5}, "source": {"run": "tests"},
    }


def export_tiny(registry: Path, name: str = "tiny") -> Path:
    from voxray.training.registry import build_from_card, export_model

    torch.manual_seed(0)
    card = make_card()
    return export_model(build_from_card(card), card, registry, name)


def make_images(shape=SHAPE, seed: int = 0) -> dict[str, nib.Nifti1Image]:
    """Per-channel NIfTI images on one oblique-ish grid, a bright blob on a zero background."""
    rng = np.random.default_rng(seed)
    affine = np.array([[-1.2, 0, 0, 30.0], [0, 1.0, 0, -20.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
    out = {}
    for i, name in enumerate(CHANNELS):
        data = np.zeros(shape, dtype=np.float32)
        data[3:-3, 2:-2, 2:-3] = rng.normal(100 + 20 * i, 10, size=(shape[0] - 6, shape[1] - 4, shape[2] - 5))
        data[8:14, 7:12, 6:11] += 80
        out[name] = nib.Nifti1Image(data, affine)
    return out


def nii_bytes(img: nib.Nifti1Image, gz: bool = True) -> bytes:
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


def nifti_header(shape, dtype=np.float32, offset: float = 352) -> bytes:
    """A single-file NIfTI-1 header (+ the 4-byte extension flag) declaring `shape`/`dtype` at `offset`."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr["vox_offset"] = offset
    return hdr.binaryblock + b"\0" * 4


def gzip_bomb(head: bytes, zeros_mib: int = 128) -> bytes:
    """gzip(head + zeros), built in 1 MiB pieces so the test itself stays small (~1 KB per MiB of zeros)."""
    comp = zlib.compressobj(9, wbits=31)
    block = bytes(2**20)
    return b"".join([comp.compress(head)] + [comp.compress(block) for _ in range(zeros_mib)] + [comp.flush()])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A version folder of a freshly exported tiny model."""
    return export_tiny(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="session")
def images() -> dict[str, nib.Nifti1Image]:
    return make_images()

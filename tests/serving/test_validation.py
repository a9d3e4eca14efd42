"""Upload checks without a server: header parsing, bounded gzip inflation, dimension limits, NaN."""

from __future__ import annotations

import gzip
import zlib

import nibabel as nib
import numpy as np
import pytest

from voxray.serving.auth import authorized, key_digest
from voxray.serving.validation import Limits, UploadError, decode_nifti, inflate_bounded

from conftest import nii_bytes

LIMITS = Limits(max_upload_bytes=2**20, max_voxels=40**3, max_dim=64)


def _img(shape=(8, 9, 10), dtype=np.float32, value=1.0) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.full(shape, value, dtype=dtype), np.diag([1.0, 2.0, 3.0, 1.0]))


@pytest.mark.parametrize("gz", [True, False])
def test_decode_roundtrip(gz):
    img = decode_nifti(nii_bytes(_img(dtype=np.int16, value=7), gz=gz), LIMITS, "t1")
    assert img.shape == (8, 9, 10)
    assert np.allclose(img.affine, np.diag([1.0, 2.0, 3.0, 1.0]))
    assert float(np.asarray(img.dataobj).max()) == 7.0


def test_nifti2_accepted():
    img2 = nib.Nifti2Image(np.ones((5, 6, 7), np.float32), np.eye(4))
    assert decode_nifti(gzip.compress(img2.to_bytes()), LIMITS, "t1").shape == (5, 6, 7)


@pytest.mark.parametrize("data,status,reason", [
    (b"hello world, definitely not an image" * 20, 400, "not a NIfTI"),
    (gzip.compress(b"x" * 1000), 400, "not a NIfTI"),
    (b"\x1f\x8b" + b"\x00" * 100, 400, "gzip"),
])
def test_garbage_refused(data, status, reason):
    with pytest.raises(UploadError, match=reason) as err:
        decode_nifti(data, LIMITS, "flair")
    assert err.value.status == status


@pytest.mark.parametrize("noise", [False, True])
def test_truncated_gzip_refused(noise):
    img = nib.Nifti1Image(np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32), np.eye(4))
    data = nii_bytes(img if noise else _img())
    with pytest.raises(UploadError, match="truncated") as err:
        decode_nifti(data[: len(data) // 2], LIMITS, "flair")
    assert err.value.status == 400


def test_truncated_raw_refused():
    data = nii_bytes(_img(), gz=False)
    with pytest.raises(UploadError, match="truncated"):
        decode_nifti(data[:-100], LIMITS, "flair")


def test_gzip_bomb_stops_at_header_dims():
    """A small header followed by megabytes of zeros: inflation stops at what the header needs (+1 MiB slack)."""
    raw = _img(shape=(4, 4, 4)).to_bytes() + b"\x00" * (64 * 2**20)
    bomb = gzip.compress(raw, compresslevel=9)
    assert len(bomb) < 200_000
    with pytest.raises(UploadError, match="inflates beyond") as err:
        inflate_bounded(bomb, LIMITS, "flair")
    assert err.value.status == 413


def test_header_claiming_huge_dims_refused_before_inflating():
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000))
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352  # a bare header says 0, which a single-file NIfTI may not
    head = hdr.binaryblock + b"\x00" * 4
    stream = zlib.compressobj(wbits=31)
    bomb = stream.compress(head) + stream.compress(b"\x00" * (8 * 2**20)) + stream.flush()
    with pytest.raises(UploadError, match="max_dim") as err:
        decode_nifti(bomb, LIMITS, "t2")
    assert err.value.status == 413


def test_voxel_limit():
    with pytest.raises(UploadError, match="max_voxels") as err:
        decode_nifti(nii_bytes(_img(shape=(50, 50, 30))), LIMITS, "t2")
    assert err.value.status == 413


def test_nan_refused():
    data = np.ones((6, 6, 6), np.float32)
    data[2, 2, 2] = np.nan
    with pytest.raises(UploadError, match="NaN") as err:
        decode_nifti(nii_bytes(nib.Nifti1Image(data, np.eye(4))), LIMITS, "t1")
    assert err.value.status == 422


def test_bearer_auth():
    digest = key_digest("s3cret")
    assert authorized("Bearer s3cret", digest)
    assert authorized("bearer   s3cret ", digest)
    assert not authorized("Bearer wrong", digest)
    assert not authorized("s3cret", digest)
    assert not authorized(None, digest)
    assert authorized(None, None)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_inf_refused(bad):
    data = np.ones((6, 6, 6), np.float32)
    data[1, 2, 3] = bad
    with pytest.raises(UploadError, match="infinite") as err:
        decode_nifti(nii_bytes(nib.Nifti1Image(data, np.eye(4))), LIMITS, "t1")
    assert err.value.status == 422


@pytest.mark.parametrize("shape", [(8, 9), (8, 9, 10, 1, 2), (8,)])
def test_not_a_volume_refused(shape):
    with pytest.raises(UploadError, match="3D image") as err:
        decode_nifti(nii_bytes(_img(shape=shape)), LIMITS, "t1")
    assert err.value.status == 422


@pytest.mark.parametrize("dtype", [np.float64, np.int8, np.uint16, np.int64])
def test_other_dtypes_decode_exactly(dtype):
    values = np.arange(8 * 9 * 10).reshape(8, 9, 10) % 100 - (50 if np.issubdtype(dtype, np.signedinteger) else 0)
    img = nib.Nifti1Image(values.astype(dtype), np.eye(4), dtype=dtype)
    out = decode_nifti(nii_bytes(img), LIMITS, "t1")
    assert np.array_equal(np.asarray(out.dataobj), values.astype(np.float32))


def test_float64_beyond_float32_range_refused():
    data = np.ones((6, 6, 6), np.float64)
    data[0, 0, 0] = 1e300
    with pytest.raises(UploadError, match="float32 range") as err:
        decode_nifti(nii_bytes(nib.Nifti1Image(data, np.eye(4))), LIMITS, "t1")
    assert err.value.status == 422


def test_bitpix_disagreeing_with_datatype_refused():
    """An int8 header claiming 16 bits per voxel: sizes computed from one and read by the other would differ."""
    raw = bytearray(_img(dtype=np.int8).to_bytes())
    raw[72:74] = np.int16(16).tobytes()
    with pytest.raises(UploadError, match="bitpix") as err:
        decode_nifti(bytes(raw), LIMITS, "t1")
    assert err.value.status == 400


def test_complex_datatype_refused():
    img = nib.Nifti1Image(np.ones((6, 6, 6), np.complex64), np.eye(4))
    with pytest.raises(UploadError, match="unsupported NIfTI datatype") as err:
        decode_nifti(nii_bytes(img), LIMITS, "t1")
    assert err.value.status == 422

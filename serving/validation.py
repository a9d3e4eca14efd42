"""Upload checks: every hostile or broken input becomes an `UploadError` (an HTTP 4xx with a reason) before it can
cost much memory or time.

- the body is read in chunks and refused once it passes `max_upload_bytes` (a Content-Length over the limit is
  refused before reading anything);
- NIfTI is recognised by its header (sizeof_hdr 348/540 and magic), never by file name;
- gzip is inflated with a bounded `zlib.decompressobj`: the header is inflated first and its dims checked against
  `max_dim`/`max_voxels`, then at most the bytes those dims need — a tiny gzip bomb stops there;
- truncated gzip streams and short data blocks are refused; NaN/Inf is checked after decoding.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import AsyncIterator

import numpy as np

from voxray.platform.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
_INFLATE_SLACK = 1 << 20


class UploadError(DataError):
    """A request the server refuses; `status` is the HTTP code (400 malformed, 413 too large, 422 unusable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Bounds on one request (see the `serve.limits` spec section)."""

    max_upload_bytes: int = 512 * 2**20
    max_voxels: int = 256**3
    max_dim: int = 1024
    max_channels: int = 16

    @classmethod
    def from_spec(cls, spec: object) -> "Limits":
        return cls(max_upload_bytes=int(spec.max_upload_mb * 2**20), max_voxels=int(spec.max_voxels),  # type: ignore[attr-defined]
                   max_dim=int(spec.max_dim))  # type: ignore[attr-defined]


def check_content_length(value: str | None, limits: Limits) -> None:
    """Refuse a declared body size over the limit before reading any of it."""
    if value is None:
        return
    try:
        size = int(value)
    except ValueError:
        raise UploadError(400, f"bad Content-Length {value!r}") from None
    if size > limits.max_upload_bytes:
        raise UploadError(413, f"upload of {size} bytes exceeds the limit of {limits.max_upload_bytes} bytes")


async def bounded_stream(chunks: AsyncIterator[bytes], limits: Limits) -> AsyncIterator[bytes]:
    """Pass chunks through, failing with 413 as soon as their total passes `max_upload_bytes`."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limits.max_upload_bytes:
            raise UploadError(413, f"upload exceeds the limit of {limits.max_upload_bytes} bytes")
        yield chunk


@dataclass(frozen=True)
class NiftiInfo:
    """What the header promises: shape, bytes of the image data, offset of the data, NIfTI version."""

    shape: tuple[int, ...]
    data_bytes: int
    offset: int
    version: int


def parse_header(head: bytes, name: str) -> NiftiInfo:
    """Read dims, datatype and vox_offset from the first bytes of a NIfTI-1/2 file (either endianness)."""
    if len(head) < 348:
        raise UploadError(400, f"{name}: not a NIfTI file (only {len(head)} bytes of header)")
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348 and head[344:347] in (b"n+1", b"ni1"):
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix = struct.unpack(endian + "h", head[72:74])[0]
            offset = int(struct.unpack(endian + "f", head[108:112])[0])
            return _info(dims, bitpix, max(offset, 352), 1, name)
        if size == 540 and head[4:7] in (b"n+2", b"ni2"):
            if len(head) < 540:
                raise UploadError(400, f"{name}: truncated NIfTI-2 header")
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix = struct.unpack(endian + "h", head[14:16])[0]
            offset = int(struct.unpack(endian + "q", head[168:176])[0])
            return _info(dims, bitpix, max(offset, 544), 2, name)
    raise UploadError(400, f"{name}: not a NIfTI file (bad header size or magic)")


def _info(dims: tuple[int, ...], bitpix: int, offset: int, version: int, name: str) -> NiftiInfo:
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise UploadError(400, f"{name}: corrupt NIfTI header (dim[0] = {ndim})")
    shape = tuple(int(d) for d in dims[1:1 + ndim])
    if any(d < 1 for d in shape) or bitpix not in (8, 16, 32, 64, 128):
        raise UploadError(400, f"{name}: corrupt NIfTI header (shape {shape}, bitpix {bitpix})")
    return NiftiInfo(shape=shape, data_bytes=int(np.prod(shape, dtype=np.int64)) * bitpix // 8, offset=offset,
                     version=version)


def check_dims(info: NiftiInfo, limits: Limits, name: str) -> None:
    """Refuse over-large images from the header alone, before inflating or decoding the data."""
    shape = info.shape
    spatial = shape[:3]
    extra = shape[3:]
    if len(shape) < 3 or any(d != 1 for d in shape[4:]):
        raise UploadError(422, f"{name}: expected a 3D image or a 4D image with channels last, got shape {shape}")
    if max(spatial) > limits.max_dim:
        raise UploadError(413, f"{name}: image axis of {max(spatial)} voxels exceeds max_dim {limits.max_dim}")
    voxels = int(np.prod(spatial, dtype=np.int64))
    if voxels > limits.max_voxels:
        raise UploadError(413, f"{name}: {voxels} voxels per channel exceed max_voxels {limits.max_voxels}")
    if extra and extra[0] > limits.max_channels:
        raise UploadError(413, f"{name}: {extra[0]} channels exceed the limit of {limits.max_channels}")


def inflate_bounded(data: bytes, limits: Limits, name: str) -> bytes:
    """The NIfTI bytes of `data` (gzip or raw), never inflating past what the header's (checked) dims need."""
    if not data.startswith(GZIP_MAGIC):
        info = parse_header(data[:544], name)
        check_dims(info, limits, name)
        return _complete(data, info, name)
    inflater = zlib.decompressobj(wbits=31)
    try:
        head = inflater.decompress(data, 544)
        if len(head) < 348 and not inflater.eof:
            raise UploadError(400, f"{name}: truncated gzip stream (ends inside the NIfTI header)")
        info = parse_header(head, name)
        check_dims(info, limits, name)
        need = info.offset + info.data_bytes
        rest = inflater.decompress(inflater.unconsumed_tail, need - len(head)) if inflater.unconsumed_tail else b""
        raw = head + rest
        if len(raw) >= need and inflater.unconsumed_tail:
            # past the image: a little slack for trailing bytes, then it is a bomb
            inflater.decompress(inflater.unconsumed_tail, _INFLATE_SLACK)
            if inflater.unconsumed_tail:
                raise UploadError(413, f"{name}: gzip stream inflates beyond the {need} bytes its header describes")
    except zlib.error as exc:
        raise UploadError(400, f"{name}: corrupt gzip stream ({exc})") from None
    if not inflater.eof:
        raise UploadError(400, f"{name}: truncated gzip stream ({len(raw)} of {need} bytes inflated)")
    return _complete(raw, info, name)


def _complete(raw: bytes, info: NiftiInfo, name: str) -> bytes:
    need = info.offset + info.data_bytes
    if len(raw) < need:
        raise UploadError(400, f"{name}: truncated NIfTI ({len(raw)} of {need} bytes)")
    return raw[:need]


def decode_nifti(data: bytes, limits: Limits, name: str):
    """A nibabel image from uploaded bytes (NIfTI-1/2, .nii or .nii.gz) after the bounded checks above."""
    import nibabel as nib

    raw = inflate_bounded(data, limits, name)
    cls = nib.Nifti1Image if parse_header(raw[:544], name).version == 1 else nib.Nifti2Image
    try:
        img = cls.from_bytes(raw)
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise UploadError(400, f"{name}: cannot decode NIfTI ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(arr).all():
        raise UploadError(422, f"{name}: image holds NaN or infinite values")
    return cls(arr, img.affine, img.header)  # decoded once: callers read the float32 array, not the bytes again

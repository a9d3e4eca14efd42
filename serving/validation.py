"""Upload checks: every hostile or broken input becomes an `UploadError` (an HTTP 4xx with a reason) before it can
cost much memory or time.

- the body is read in chunks and refused once it passes `max_upload_bytes` (a Content-Length over the limit is
  refused before reading anything);
- NIfTI is recognised by its header (sizeof_hdr 348/540 and magic), never by file name;
- the header is checked before any image data is inflated: dims against `max_dim`/`max_voxels`/`max_channels`,
  the datatype against the types that decode to real numbers, `vox_offset` within 1 MiB of the header;
- gzip is inflated in `INFLATE_STEP` pieces with a positive zlib `max_length` every time (0 would mean *no limit*),
  never past `vox_offset + image bytes` plus a small slack, so a bomb costs at most the declared (capped) size;
- truncated streams and short data blocks are refused; NaN/Inf is checked after decoding.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, AsyncIterator

import numpy as np

from voxray.platform.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
HEADER_READ = 544
"""Bytes inflated first: enough for a NIfTI-2 header and its 4-byte extension flag."""
INFLATE_STEP = 1 << 20
"""Most bytes one zlib call may produce."""
TRAILING_SLACK = 64 * 1024
"""Bytes a gzip stream may hold past the image (padding) before it counts as a bomb."""
MAX_EXTENSION_BYTES = 1 << 20
"""How far past the header `vox_offset` may point (room for header extensions, not for a bomb)."""

_MIN_OFFSET = {1: 352, 2: 544}
# NIfTI datatype code → (name, bytes per voxel) for the types that decode to real numbers.
_DATATYPES = {2: ("uint8", 1), 4: ("int16", 2), 8: ("int32", 4), 16: ("float32", 4), 64: ("float64", 8),
              256: ("int8", 1), 512: ("uint16", 2), 768: ("uint32", 4), 1024: ("int64", 8), 1280: ("uint64", 8)}


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
    max_inflight_bytes: int = 2 * 2**30
    """Estimated peak memory all of a replica's requests may hold at once (serving/admission.py)."""

    @property
    def max_files(self) -> int:
        """Most files in one upload (DICOM sends a file per slice): `max_dim` slices for each of `max_channels`."""
        return self.max_channels * self.max_dim

    @classmethod
    def from_spec(cls, spec: Any) -> "Limits":
        """From a `serve.limits` section (`LimitsSpec`), MiB turned into bytes."""
        return cls(max_upload_bytes=int(spec.max_upload_mb * 2**20), max_voxels=int(spec.max_voxels),
                   max_dim=int(spec.max_dim), max_inflight_bytes=int(spec.max_inflight_mb * 2**20))


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
    """What the header promises: shape, bytes of the image data, offset of the data, NIfTI version, dtype."""

    shape: tuple[int, ...]
    data_bytes: int
    offset: int
    version: int
    dtype: str = "float32"

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)


def parse_header(head: bytes, name: str) -> NiftiInfo:
    """Read dims, datatype and vox_offset from the first bytes of a single-file NIfTI-1/2 (either endianness)."""
    if len(head) < 348:
        raise UploadError(400, f"{name}: not a NIfTI file (only {len(head)} bytes of header)")
    for endian in "<>":
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
            _single_file(head[344:347] == b"n+1", name)
            dims = struct.unpack(endian + "8h", head[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", head[70:74])
            offset = struct.unpack(endian + "f", head[108:112])[0]
            return _info(dims, datatype, bitpix, offset, 1, name)
        if size == 540 and head[4:8] in (b"n+2\0", b"ni2\0"):
            if len(head) < 540:
                raise UploadError(400, f"{name}: truncated NIfTI-2 header")
            _single_file(head[4:7] == b"n+2", name)
            datatype, bitpix = struct.unpack(endian + "2h", head[12:16])
            dims = struct.unpack(endian + "8q", head[16:80])
            offset = struct.unpack(endian + "q", head[168:176])[0]
            return _info(dims, datatype, bitpix, offset, 2, name)
    raise UploadError(400, f"{name}: not a NIfTI file (bad header size or magic)")


def _single_file(single: bool, name: str) -> None:
    if not single:
        raise UploadError(400, f"{name}: header of a .hdr/.img pair (magic ni1/ni2); upload one single-file "
                               ".nii or .nii.gz instead")


def _info(dims: tuple[int, ...], datatype: int, bitpix: int, offset: float, version: int, name: str) -> NiftiInfo:
    ndim = int(dims[0])
    if not 1 <= ndim <= 7:
        raise UploadError(400, f"{name}: corrupt NIfTI header (dim[0] = {ndim})")
    shape = tuple(int(d) for d in dims[1:1 + ndim])
    if any(d < 1 for d in shape):
        raise UploadError(400, f"{name}: corrupt NIfTI header (shape {shape})")
    if datatype not in _DATATYPES:
        raise UploadError(422, f"{name}: unsupported NIfTI datatype {datatype} (complex, RGB, bit or 128-bit "
                               f"images); send one of {', '.join(n for n, _ in _DATATYPES.values())}")
    dtype, size = _DATATYPES[datatype]
    if bitpix != 8 * size:
        raise UploadError(400, f"{name}: corrupt NIfTI header (datatype {dtype} with bitpix {bitpix})")
    lowest = _MIN_OFFSET[version]
    if not math.isfinite(offset) or offset < lowest:
        raise UploadError(400, f"{name}: corrupt NIfTI header (vox_offset {offset} points inside the header; "
                               f"a single-file NIfTI-{version} needs at least {lowest})")
    if offset > lowest + MAX_EXTENSION_BYTES:
        raise UploadError(400, f"{name}: vox_offset {int(offset)} is more than {MAX_EXTENSION_BYTES} bytes past the "
                               "header; refusing to inflate that much padding")
    return NiftiInfo(shape=shape, data_bytes=math.prod(shape) * size, offset=int(offset), version=version,
                     dtype=dtype)


def check_dims(info: NiftiInfo, limits: Limits, name: str) -> None:
    """Refuse over-large or non-volume images from the header alone, before inflating or decoding the data."""
    shape = info.shape
    spatial = shape[:3]
    extra = shape[3:]
    if len(shape) < 3 or any(d != 1 for d in shape[4:]):
        raise UploadError(422, f"{name}: expected a 3D image or a 4D image with channels last, got shape {shape}")
    if max(spatial) > limits.max_dim:
        raise UploadError(413, f"{name}: image axis of {max(spatial)} voxels exceeds max_dim {limits.max_dim}")
    voxels = math.prod(spatial)
    if voxels > limits.max_voxels:
        raise UploadError(413, f"{name}: {voxels} voxels per channel exceed max_voxels {limits.max_voxels}")
    if extra and extra[0] > limits.max_channels:
        raise UploadError(413, f"{name}: {extra[0]} channels exceed the limit of {limits.max_channels}")


def _pull(inflater: "zlib._Decompress", feed: bytes, want: int) -> list[bytes]:
    """Up to `want` inflated bytes, at most INFLATE_STEP per zlib call; fewer only when the stream ends or the
    input runs out. Every call gets a positive max_length, so zlib never inflates without a bound."""
    out: list[bytes] = []
    got = 0
    while got < want and not inflater.eof:
        chunk = inflater.decompress(feed, min(INFLATE_STEP, want - got))
        progressed = chunk or len(inflater.unconsumed_tail) < len(feed)
        feed = inflater.unconsumed_tail
        if chunk:
            out.append(chunk)
            got += len(chunk)
        if not progressed:
            break  # input exhausted: a truncated stream
    return out


def peek_header(data: bytes, limits: Limits, name: str) -> NiftiInfo:
    """The checked header of an upload (gzip or raw), inflating at most HEADER_READ bytes."""
    head = data[:HEADER_READ]
    if data.startswith(GZIP_MAGIC):
        try:
            head = b"".join(_pull(zlib.decompressobj(wbits=31), data, HEADER_READ))
        except zlib.error as exc:
            raise UploadError(400, f"{name}: corrupt gzip stream ({exc})") from None
    info = parse_header(head, name)
    check_dims(info, limits, name)
    return info


def inflate_bounded(data: bytes, limits: Limits, name: str) -> bytes:
    """The NIfTI bytes of `data` (gzip or raw): header checked first, then exactly the bytes it describes."""
    if not data.startswith(GZIP_MAGIC):
        return _complete(data, peek_header(data, limits, name), name)
    inflater = zlib.decompressobj(wbits=31)
    try:
        parts = _pull(inflater, data, HEADER_READ)
        head = b"".join(parts)
        if len(head) < 348 and not inflater.eof:
            raise UploadError(400, f"{name}: truncated gzip stream (ends inside the NIfTI header)")
        info = parse_header(head, name)
        check_dims(info, limits, name)
        need = info.offset + info.data_bytes
        got = len(head)
        if got < need:
            parts += _pull(inflater, inflater.unconsumed_tail, need - got)
            got = sum(len(p) for p in parts)
        if got >= need and not inflater.eof:
            extra = sum(len(p) for p in _pull(inflater, inflater.unconsumed_tail, TRAILING_SLACK))
            if not inflater.eof and extra >= TRAILING_SLACK:
                raise UploadError(413, f"{name}: gzip stream inflates beyond the {need} bytes its header describes")
    except zlib.error as exc:
        raise UploadError(400, f"{name}: corrupt gzip stream ({exc})") from None
    if not inflater.eof:
        raise UploadError(400, f"{name}: truncated gzip stream ({min(got, need)} of {need} bytes inflated)")
    return _complete(b"".join(parts), info, name)


def _complete(raw: bytes, info: NiftiInfo, name: str) -> bytes:
    need = info.offset + info.data_bytes
    if len(raw) < need:
        raise UploadError(400, f"{name}: truncated NIfTI ({len(raw)} of {need} bytes; the header declares shape "
                               f"{info.shape} {info.dtype})")
    return raw[:need]


def decode_nifti(data: bytes, limits: Limits, name: str):
    """A nibabel image with float32 data from uploaded bytes (NIfTI-1/2, .nii or .nii.gz) after the checks above."""
    import nibabel as nib

    raw = inflate_bounded(data, limits, name)
    cls = nib.Nifti1Image if parse_header(raw[:HEADER_READ], name).version == 1 else nib.Nifti2Image
    try:
        img = cls.from_bytes(raw)
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.asarray(img.dataobj, dtype=np.float32)
        affine = img.affine
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise UploadError(400, f"{name}: cannot decode NIfTI ({type(exc).__name__}: {exc})") from None
    if affine is None or not np.isfinite(affine).all():
        raise UploadError(422, f"{name}: the header's orientation (qform/sform) is not a finite affine")
    if not np.isfinite(arr).all():
        raise UploadError(422, f"{name}: image holds NaN or infinite values (or values beyond the float32 range)")
    return cls(arr, affine, img.header)  # decoded once: callers read the float32 array, not the bytes again

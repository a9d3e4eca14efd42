"""DICOM uploads → a model's input volume: unzip within bounds, parse, group by series, match series to channels.

Files arrive keyed by a path-like name: `<field>/<file name>` for multipart .dcm parts, `<field>/<member path>` for
the members of an uploaded zip, `<name>/<file>` for CLI inputs. The first path component that names one of the
model's channels assigns a file's series to that channel (so a field `flair` repeated per slice, or a zip folder
`flair/`, says which series is which); other series are matched by the rule: `{channel: regex}` over
SeriesDescription/ProtocolName when configured, else the channel names and their aliases as words of the
SeriesDescription (`AX T2 FLAIR` → flair, `T1 POST GD` → t1gd). A one-channel model takes the one series.

Bounds are those of NIfTI uploads (serving/validation.py `Limits`), checked before anything is extracted or
decoded: at most `max_files` files, each at most `per_file_bytes`, all together at most `max_upload_bytes`
uncompressed; each series at most `max_dim` per axis and `max_voxels`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from voxray.preprocessing.dicom import DicomError, Series, check_series, describe, series_volume
from voxray.serving.validation import Limits, UploadError
from voxray.training.channels import canonical, channel_from_filename

log = logging.getLogger(__name__)

__all__ = ["is_dicom", "is_zip", "is_dicom_upload", "dicom_part_name", "expand", "decode_dicom", "dicom_cost", "per_file_bytes",
           "match_series", "is_dicom_path", "read_paths", "SOURCE_KEY"]

SOURCE_KEY = "dicom_source"
"""Key in the reference image's nibabel `extra` dict holding the reference series' datasets in slice order."""
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|DICOMDIR$)", re.IGNORECASE)


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128-byte preamble then `DICM`."""
    return data[128:132] == b"DICM"


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def is_dicom_upload(files: Mapping[str, bytes]) -> bool:
    """True when the upload is DICOM (a zip, or .dcm files); NIfTI otherwise."""
    return bool(files) and any(is_dicom(d) or is_zip(d) for d in files.values())


def dicom_part_name(field: str, filename: str | None, taken: Mapping[str, bytes]) -> str:
    """The key of a multipart .dcm part: `<field>/<file name>`, made unique (fields repeat, one part per slice)."""
    base = f"{field}/{(filename or 'part').replace('/', '_')}"
    key, n = base, 1
    while key in taken:
        n += 1
        key = f"{base}#{n}"
    return key


def per_file_bytes(limits: Limits) -> int:
    """Largest single DICOM file: a slice at the axis limit, 8 bytes a pixel, plus 1 MiB of header."""
    return min(limits.max_upload_bytes, limits.max_dim**2 * 8 + 2**20)


def _zip_members(data: bytes, name: str, limits: Limits) -> tuple[zipfile.ZipFile, list[zipfile.ZipInfo]]:
    """The zip's file members after checking their count and declared sizes (nothing inflated yet)."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise UploadError(400, f"{name}: not a readable zip ({exc})") from None
    members = [m for m in zf.infolist() if not m.is_dir() and not _JUNK.search(m.filename)]
    if len(members) > limits.max_files:
        raise UploadError(413, f"{name}: {len(members)} files in the zip exceed the limit of {limits.max_files}")
    cap = per_file_bytes(limits)
    for m in members:
        if m.file_size > cap:
            raise UploadError(413, f"{name}: member {m.filename} of {m.file_size} bytes exceeds the per-file limit "
                                   f"of {cap} bytes")
    total = sum(m.file_size for m in members)
    if total > limits.max_upload_bytes:
        raise UploadError(413, f"{name}: the zip inflates to {total} bytes, over the limit of "
                               f"{limits.max_upload_bytes} bytes")
    return zf, members


def _unzip(data: bytes, name: str, limits: Limits) -> Iterable[tuple[str, bytes]]:
    """(member path, bytes) of each file, each read no further than its checked declared size."""
    zf, members = _zip_members(data, name, limits)
    with zf:
        for m in members:
            try:
                with zf.open(m) as fh:
                    raw = fh.read(m.file_size + 1)  # zipfile stops at the declared size and checks the CRC
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                raise UploadError(400, f"{name}: member {m.filename}: cannot extract ({exc})") from None
            yield m.filename, raw


def expand(files: Mapping[str, bytes], limits: Limits) -> dict[str, bytes]:
    """The DICOM files of an upload, keyed `<field>/<path>`: zips extracted within bounds, .dcm parts kept."""
    out: dict[str, bytes] = {}
    cap = per_file_bytes(limits)
    for field, data in files.items():
        if is_zip(data):
            for member, raw in _unzip(data, field, limits):
                out[f"{field}/{member}"] = raw
        elif is_dicom(data):
            if len(data) > cap:
                raise UploadError(413, f"{field}: {len(data)} bytes exceed the per-file limit of {cap} bytes")
            out[field if "/" in field else f"{field}/{len(out)}"] = data
        else:
            raise UploadError(400, f"{field}: not a DICOM file (no DICM marker after the 128-byte preamble) and "
                                   "not a zip; do not mix NIfTI and DICOM in one request")
        if len(out) > limits.max_files:
            raise UploadError(413, f"{len(out)} DICOM files exceed the limit of {limits.max_files}")
    if sum(len(v) for v in out.values()) > limits.max_upload_bytes:
        raise UploadError(413, f"the DICOM files total more than {limits.max_upload_bytes} bytes")
    return out


def _parse(name: str, data: bytes) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        raise UploadError(400, f"{name}: not a DICOM file (no DICM marker after the 128-byte preamble)") from None
    except Exception as exc:  # pydicom raises many types for corrupt files
        raise UploadError(400, f"{name}: cannot parse DICOM ({type(exc).__name__}: {exc})") from None


def _group(files: Mapping[str, bytes]) -> list[Series]:
    """The parsed files grouped by SeriesInstanceUID, in upload order."""
    series: dict[str, Series] = {}
    for name, data in files.items():
        ds = _parse(name, data)
        uid = str(ds.get("SeriesInstanceUID") or "")
        if not uid:
            raise UploadError(422, f"{name}: DICOM file has no SeriesInstanceUID")
        entry = series.setdefault(uid, Series(uid, [], []))
        entry.datasets.append(ds)
        entry.names.append(name)
    return list(series.values())


def _hint(series: Series, channels: Sequence[str]) -> str | None:
    """The channel the series' file paths name (a field or folder called `flair`), if they name one."""
    wanted = {canonical(c): c for c in channels}
    named = {wanted[canonical(p)] for n in series.names for p in n.split("/")[:-1] if canonical(p) in wanted}
    if len(named) > 1:
        raise UploadError(422, f"{series.label()}: its files are named for several channels {sorted(named)}")
    return named.pop() if named else None


def _by_description(series: Series, channels: Sequence[str], rule: Mapping[str, str] | None) -> str | None:
    """The channel a series' SeriesDescription/ProtocolName names under `rule` (regexes) or by channel words."""
    ds = series.datasets[0]
    text = " ".join(str(ds.get(k) or "") for k in ("SeriesDescription", "ProtocolName")).strip()
    if rule:
        patterns = {canonical(k): v for k, v in rule.items()}  # keys may use aliases (t1ce for t1gd)
        hits = [c for c in channels if canonical(c) in patterns and re.search(patterns[canonical(c)], text)]
        return hits[0] if len(hits) == 1 else None
    words = [w for w in re.split(r"[^A-Za-z0-9]+", text) if w]
    pairs = {canonical(a + b) for a, b in zip(words, words[1:])}  # "T1 GD" → t1gd, "T2 FLAIR" → flair
    hits = [c for c in channels if canonical(c) in pairs]
    if len(hits) == 1:
        return hits[0]
    return channel_from_filename("_".join(words), list(channels)) if words else None


def match_series(series: Sequence[Series], channels: Sequence[str],
                 rule: Mapping[str, str] | None = None) -> dict[str, Series]:
    """One series per model channel (see the module docstring); 422 naming what is missing, mixed or ambiguous."""
    found: dict[str, list[Series]] = {c: [] for c in channels}
    loose: list[Series] = []
    for s in series:
        hinted = _hint(s, channels)
        (found[hinted] if hinted else loose).append(s)
    for c, hits in found.items():
        if len(hits) > 1:
            raise UploadError(422, f"channel {c!r}: mixed series in one channel ({describe(hits)}); send one series "
                                   "per channel")
    if len(channels) == 1 and not found[channels[0]] and not rule:
        if len(loose) > 1:
            raise UploadError(422, f"mixed series: {len(loose)} series for the model's one channel {channels[0]!r} "
                                   f"({describe(loose)}); send one series")
        found[channels[0]] = list(loose)
        loose = []
    for s in loose:
        c = _by_description(s, [c for c in channels if not found[c]], rule)
        if c is not None and found[c]:
            raise UploadError(422, f"channel {c!r}: several series match ({describe(found[c] + [s])})")
        if c is not None:
            found[c].append(s)
    missing = [c for c, hits in found.items() if not hits]
    if missing:
        how = "the serve spec's dicom_series rule" if rule else "SeriesDescription words (or a dicom_series rule)"
        raise UploadError(422, f"no DICOM series for channel(s) {missing} by {how}; found {describe(series)}; "
                               "name each series' field or zip folder after its channel")
    extra = [s for s in series if all(s is not hits[0] for hits in found.values())]
    if extra:
        log.info("ignored DICOM series not matched to a channel: %s", describe(extra))
    return {c: hits[0] for c, hits in found.items()}


def decode_dicom(files: Mapping[str, bytes], channels: Sequence[str], limits: Limits,
                 rule: Mapping[str, str] | None = None) -> tuple[Any, Any]:
    """(Volume, reference image): the volume in the model's channel order; the reference is the first channel's
    series as a NIfTI image (RAS affine) whose `extra[SOURCE_KEY]` holds that series' datasets for a DICOM-SEG."""
    import nibabel as nib

    from voxray.training.predict import volume_from_images

    matched = match_series(_group(expand(files, limits)), channels, rule)
    images = {}
    sources = {}
    for channel, s in matched.items():
        try:
            check_series(s, limits.max_dim, limits.max_voxels)
            data, affine, ordered = series_volume(s)
        except DicomError as exc:
            raise UploadError(exc.status, f"channel {channel!r}: {exc}") from None
        images[channel] = nib.Nifti1Image(data, affine)
        sources[channel] = ordered
    volume = volume_from_images(images, channels)
    like = images[channels[0]]
    like.extra[SOURCE_KEY] = sources[channels[0]]
    return volume, like


def is_dicom_path(path: str | Path) -> bool:
    """A CLI input that is DICOM: a directory, a .zip, a .dcm, or a file with the DICM marker."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in (".zip", ".dcm"):
        return True
    with contextlib.suppress(OSError), p.open("rb") as fh:
        return is_dicom(fh.read(132))
    return False


def read_paths(inputs: Sequence[str], limits: Limits) -> dict[str, bytes]:
    """CLI `--input` values (`[channel=]dir|zip|file.dcm`) → upload-style {key: bytes}: a directory's files keyed
    `<channel or directory name>/<relative path>`, a zip or .dcm under `<channel or parent directory>/<name>`.
    Sizes are checked from the file system before anything is read."""
    files: list[tuple[str, Path]] = []
    for value in inputs:
        name, _, path = value.rpartition("=")
        p = Path(path)
        if p.is_dir():
            files += [(f"{name or p.name}/{f.relative_to(p).as_posix()}", f) for f in sorted(p.rglob("*"))
                      if f.is_file() and not _JUNK.search(f.as_posix())]
        elif p.is_file():
            files.append((f"{name or p.parent.name or 'input'}/{p.name}", p))
        else:
            raise UploadError(400, f"input {path!r} does not exist")
    if len(files) > limits.max_files:
        raise UploadError(413, f"{len(files)} DICOM files exceed the limit of {limits.max_files}")
    total = sum(f.stat().st_size for _, f in files)
    if total > limits.max_upload_bytes:
        raise UploadError(413, f"the DICOM inputs total {total} bytes, over the limit of {limits.max_upload_bytes}")
    return {key: f.read_bytes() for key, f in files}


def dicom_cost(files: Mapping[str, bytes], limits: Limits, out_channels: int, n_channels: int) -> int:
    """Estimated peak bytes of a DICOM request, before parsing: the upload, the extracted files and parsed datasets,
    three float32 copies of the volume and the logits, counting 2 bytes a voxel (16-bit MR/CT pixels)."""
    upload = sum(len(d) for d in files.values())
    raw = 0
    for field, data in files.items():
        if is_zip(data):
            zf, members = _zip_members(data, field, limits)
            zf.close()
            raw += sum(m.file_size for m in members)
        else:
            raw += len(data)
    voxels = raw // 2
    return upload + 2 * raw + 3 * 4 * voxels + 4 * (voxels // max(1, n_channels)) * max(1, out_channels)

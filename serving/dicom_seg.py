"""A predicted mask → DICOM-SEG (highdicom) over the source series, segments named from the model card's labels.

The SEG references every image of the reference channel's series (the first of the model's channels), one binary
segment per named class of the card (`stats.class_masks`: label values, bitmask bits and BraTS regions alike, so
overlapping regions stay separate segments). Each segment's property type is coded in a private scheme
(`99VOXRAY`) whose meaning is the card's label name, under the SNOMED category "Tissue"; the algorithm is the
model's name and version.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from voxray.preprocessing.dicom import frames_from_volume
from voxray.serving.dicom_in import SOURCE_KEY, is_dicom_upload
from voxray.serving.stats import class_masks
from voxray.serving.validation import UploadError

__all__ = ["DICOM_MEDIA", "wants_dicom", "check_seg_request", "source_series", "segmentation", "seg_bytes"]

DICOM_MEDIA = "application/dicom"
CODING_SCHEME = "99VOXRAY"
"""Private coding scheme of the segments' property types: value = label slug, meaning = the card's label name."""


def wants_dicom(accept: str | None) -> bool:
    """Whether the client asked for a DICOM-SEG (`Accept: application/dicom`)."""
    return bool(accept) and any(p.split(";")[0].strip().lower() == DICOM_MEDIA for p in accept.split(","))


def check_seg_request(files: Mapping[str, bytes], outputs: Sequence[str]) -> None:
    """Refuse a DICOM-SEG request before any work (422): NIfTI input, or outputs beyond the mask."""
    if not is_dicom_upload(files):
        raise UploadError(422, "a DICOM-SEG (Accept: application/dicom) needs DICOM input; this upload was NIfTI")
    if tuple(outputs) != ("mask",):
        raise UploadError(422, f"a DICOM-SEG carries the mask only, not {', '.join(o for o in outputs if o != 'mask')}; "
                               "drop Accept: application/dicom or ?outputs")


def source_series(like: Any) -> list[Any]:
    """The reference series' datasets (slice order) that `dicom_in.decode_dicom` attached to the reference image."""
    datasets = getattr(like, "extra", {}).get(SOURCE_KEY)
    if not datasets:
        raise UploadError(422, "a DICOM-SEG (Accept: application/dicom) needs DICOM input; this upload was NIfTI")
    return datasets


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")[:16] or "segment"


def segmentation(mask: np.ndarray, like: Any, card: dict) -> Any:
    """The highdicom Segmentation of `mask` ((columns, rows, slices) on the reference image's grid)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = source_series(like)
    classes = class_masks(np.asarray(mask), card)
    if not classes:
        raise UploadError(422, "the model card names no labels, so there are no segments for a DICOM-SEG")
    algorithm = hd.AlgorithmIdentificationSequence(name=str(card.get("name") or "voxray"),
                                                   family=codes.cid7162.ArtificialIntelligence,
                                                   version=str(card.get("version") or "0"))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=i, segment_label=name[:64],
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=hd.sr.CodedConcept(_slug(name), CODING_SCHEME, name[:64]),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for i, name in enumerate(classes, start=1)]
    # (columns, rows, slices, segments) → (slices, rows, columns, segments), frames in the sources' order
    stacked = np.stack([frames_from_volume(on) for on in classes.values()], axis=-1).astype(np.uint8)
    first = sources[0]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=stacked, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(
            first.get("SeriesNumber") or 0) + 1000, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="voxray", manufacturer_model_name=str(card.get("name") or "voxray")[:64],
        software_versions=f"voxray {card.get('name')} v{card.get('version')}"[:64], device_serial_number="0",
        content_label="VOXRAY", content_description=f"{card.get('name')} v{card.get('version')}"[:64],
        omit_empty_frames=False)


def seg_bytes(mask: np.ndarray, like: Any, card: dict) -> bytes:
    """The DICOM-SEG as Part 10 file bytes."""
    buf = io.BytesIO()
    segmentation(mask, like, card).save_as(buf)
    return buf.getvalue()

"""The `preprocess` section: dataset → zarr store (see DESIGN.md, "Store")."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxray.platform.specs.common import ArtifactPath, StrictModel

Layout = Literal["msd_brats", "isles2022", "brats2023", "ibsr18", "lgg_tif", "uwmadison_gi", "nifti_pairs"]


class DatasetSpec(StrictModel):
    layout: Layout
    """Dataset layout as downloaded (see README "Datasets")."""
    root: ArtifactPath
    """Dataset root folder (relative paths resolve against the spec file)."""
    images: dict[str, str] | None = None
    """nifti_pairs only: modality name → glob relative to root, e.g. {T1: "*/t1.nii.gz"}."""
    label: str | None = None
    """nifti_pairs only: glob for label files relative to root; null = unlabelled."""
    case_id_regex: str | None = None
    """nifti_pairs only: regex with one group that extracts the case id from a file path (default: parent folder)."""
    reference_modality: str | None = None
    """Modality whose grid the others are resampled onto when grids differ (isles2022 default: dwi); null = adapter default."""
    split: Literal["train", "test", "all"] = "train"
    """Which part of the dataset to read: labelled training cases (default), unlabelled test cases, or both."""

    @model_validator(mode="after")
    def _pairs_need_globs(self) -> "DatasetSpec":
        if self.layout == "nifti_pairs" and not self.images:
            raise ValueError("layout 'nifti_pairs' needs `images` (modality → glob), e.g. {T1: '*/t1.nii.gz'}")
        if self.layout != "nifti_pairs" and (self.images or self.label or self.case_id_regex):
            raise ValueError(f"`images`/`label`/`case_id_regex` apply only to layout 'nifti_pairs', not {self.layout!r}")
        return self


class CodecSpec(StrictModel):
    name: Literal["lz4", "zstd", "none"] = "lz4"
    """Chunk codec (blosc, byte shuffle). Default lz4: in benchmarks/store.py (BraTS-size cases) a float16 64³ lz4
    store is ~0.6× nnU-Net's blosc2 files (and half an uncompressed one: zeros and padded edge chunks compress to
    nothing), and a training patch read (image + label, pad, float32) is faster than nnU-Net's; `none` reads a little
    faster still at twice the size."""
    level: int = Field(default=1, ge=0, le=9)
    """Compression level (lz4/zstd only)."""


class ResamplingSpec(StrictModel):
    scheme: Literal["linear", "separate_z"] = "linear"
    """linear: image order 1, label nearest, in 3D. separate_z (nnU-Net): for a case whose source or target spacing is
    anisotropic (one axis > `anisotropy_threshold` × the finest), images spline `order` in plane and `order_z` across
    slices, labels per class (one-hot linear in plane, nearest across); other cases spline `order` / per-class linear
    in 3D. `voxray plan` picks separate_z for anisotropic datasets. The inverse (predict, serve) follows the record."""
    order: int = Field(default=3, ge=0, le=5)
    """Image spline order in plane (separate_z)."""
    order_z: Literal[0, 1] = 0
    """Image order across slices (separate_z): 0 nearest slice (nnU-Net), 1 linear."""
    anisotropy_threshold: float = Field(default=3.0, gt=1)
    """Largest / smallest spacing ratio above which a grid counts as anisotropic (nnU-Net: 3)."""


class PreprocessSpec(StrictModel):
    dataset: DatasetSpec
    """Where the raw data is and in which layout."""
    store: ArtifactPath
    """Output zarr v3 store (local path or fsspec URI)."""
    spacing: list[float] | None = Field(default=None, min_length=3, max_length=3)
    """Target voxel spacing in mm (x, y, z in RAS order); null keeps each case's own spacing."""
    normalize: Literal["zscore_nonzero", "zscore", "ct_clip", "ct_zscore", "none"] = "zscore_nonzero"
    """Per-channel intensity normalisation: z-score over nonzero voxels (default, zeros stay 0), over all voxels,
    CT-style clip to `clip` then scale to [0, 1], nnU-Net's CT scheme (clip to `clip`, then z-score with the dataset's
    foreground `ct_stats`), or none."""
    clip: tuple[float, float] | None = None
    """Intensity window for `ct_clip` / `ct_zscore` (low, high); `voxray plan` uses the foreground 0.5/99.5 percentiles."""
    ct_stats: tuple[float, float] | None = None
    """(mean, std) of the dataset's foreground intensities for `ct_zscore` (from the fingerprint)."""
    resampling: ResamplingSpec = ResamplingSpec()
    """How cases are resampled to `spacing` (and how predictions are mapped back)."""
    crop_nonzero: bool = True
    """Crop every case to the bounding box of nonzero image voxels (recorded, undone by the inverse)."""
    image_dtype: Literal["float16", "float32"] = "float16"
    """Stored image dtype (float16 halves the store; normalised intensities lose nothing that matters)."""
    chunk: list[int] = Field(default=[64, 64, 64], min_length=2, max_length=3)
    """Spatial chunk shape (z, y, x); all channels live in one chunk. 64³ read 128³ patches faster than 128³ chunks in
    benchmarks/store.py; two values (y, x) = one slice per chunk for 2D layouts."""
    codec: CodecSpec = CodecSpec()
    """Chunk compression codec."""
    fg_samples_per_class: int = Field(default=10_000, ge=1)
    """Foreground coordinates kept per label class for fg-oversampled patch sampling (subsampled, seeded)."""
    max_cases: int | None = Field(default=None, ge=1)
    """Convert only the first N discovered cases (sorted by id); null = all."""
    concurrency: int | None = Field(default=None, ge=1)
    """Ray Data tasks converting cases at once; null = number of CPUs. Bounds memory: one case per task."""
    memory_per_case_mb: int = Field(default=1024, ge=64)
    """Memory reserved per conversion task (Ray schedules by it; full BraTS cases need ~1 GiB)."""
    overwrite: bool = False
    """Rebuild every case even when its checksum and spec hash match (default: resume, skip done cases)."""
    checksum: Literal["content", "size_mtime"] = "content"
    """How a rerun decides a source file is unchanged. content (default): a sha256 of its bytes, so a touched but
    identical file is not converted again and an edited one of the same size is. size_mtime: the stored hash is
    reused when size and mtime match (skips reading the dataset on reruns; misses edits that keep both)."""

    @model_validator(mode="after")
    def _clip_for_ct(self) -> "PreprocessSpec":
        if self.normalize in ("ct_clip", "ct_zscore") and self.clip is None:
            raise ValueError(f"normalize {self.normalize!r} needs `clip: [low, high]`")
        if self.normalize == "ct_zscore" and (self.ct_stats is None or self.ct_stats[1] <= 0):
            raise ValueError("normalize 'ct_zscore' needs `ct_stats: [mean, std]` with std > 0")
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip {list(self.clip)} must be [low, high] with low < high")
        return self

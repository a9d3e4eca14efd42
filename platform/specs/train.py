"""The `train` section: store → Ray Train (DDP) → checkpoints, metrics, registry."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from voxray.platform.specs.common import ArtifactPath, StrictModel, is_uri
from voxray.platform.specs.inference import InferenceSpec
from voxray.platform.specs.models import FactorizerSpec, ModelSpec


class OptimizerSpec(StrictModel):
    name: Literal["adamw", "sgd"] = "adamw"
    """Optimiser."""
    lr: float = Field(default=1.0e-4, ge=0)
    """Peak learning rate. 0 freezes the weights: a control run that shows what the untrained network scores (the
    learning tests fail with it, as they must)."""
    weight_decay: float = Field(default=0.01, ge=0)
    """Weight decay (applied to all parameters, as in the Factorizer recipe)."""
    momentum: float = Field(default=0.99, ge=0, lt=1)
    """SGD momentum (Nesterov); ignored by AdamW."""


class ScheduleSpec(StrictModel):
    name: Literal["warmup_cosine", "cosine", "poly", "constant"] = "warmup_cosine"
    """Learning-rate schedule over `train.steps`."""
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warm-up steps from 0 (warmup_cosine)."""
    power: float = Field(default=0.9, gt=0)
    """Exponent of the poly schedule."""
    extend_peak: float = Field(default=0.1, ge=0, le=1)
    """When `train.steps` changes on a run that already has a checkpoint (e.g. raised on a finished run), the steps
    after it follow a new tail instead of jumping onto the re-stretched schedule: from the current factor linearly up
    to max(current, extend_peak) over 10% of the new steps, then this schedule's decay (cosine; poly for poly;
    constant stays 1) to 0 at the new `steps`. 0 = a pure tail from the current factor."""


class LossSpec(StrictModel):
    name: Literal["dice", "ce", "dice_ce", "focal", "dice_focal"] = "dice_ce"
    """Loss (MONAI); sigmoid for region/multi-label tasks, softmax for `labels`."""
    deep_supervision_weights: list[float] | None = None
    """Weights of the deep-supervision heads (normalised); null = 1, 1/2, 1/4, … as in the Factorizer paper."""


class SamplingSpec(StrictModel):
    fg_fraction: float = Field(default=0.33, ge=0, le=1)
    """Fraction of patches centred on a foreground voxel (class chosen uniformly), as nnU-Net's 33%."""
    slice_mode: Literal["random", "most_populated"] = "random"
    """2D models: random slices, or each case's slice with the most foreground (seed 002)."""
    loader_workers: int = Field(default=2, ge=0)
    """Background threads that read and augment patches so the model does not wait."""


class AugmentSpec(StrictModel):
    enabled: bool = True
    """Apply augmentations to training patches."""
    flip: float = Field(default=0.5, ge=0, le=1)
    """Probability of a flip on each spatial axis."""
    affine: float = Field(default=0.15, ge=0, le=1)
    """Probability of a random rotation (±30°) / scaling (±30%)."""
    intensity: float = Field(default=0.15, ge=0, le=1)
    """Probability of each of intensity scale, shift, Gaussian noise and gamma."""
    bias_field: float = Field(default=0.0, ge=0, le=1)
    """Probability of a random MR bias field."""


class ValidationSpec(StrictModel):
    mode: Literal["split", "train_cases", "none"] = "split"
    """split: hold out labelled cases (k-fold or `split` fractions); needs ≥ 2 labelled cases.
    train_cases: validate on the training cases themselves (one labelled case is enough); the metrics keep their
    `val/` names but measure fit, not generalisation, and carry `validation_on_training_data: 1`.
    none: no validation; every labelled case trains and checkpoints are ranked by the mean training loss since the
    previous report (`checkpoint.metric` defaults to `train/loss`, mode min)."""
    every: int = Field(default=1000, ge=1)
    """Validate (sliding window on whole volumes) every N steps and at the end."""
    folds: int = Field(default=5, ge=2)
    """k of k-fold cross-validation over cases (deterministic, saved in the run dir)."""
    fold: int = Field(default=0, ge=0)
    """Which fold is the validation fold."""
    split: tuple[float, float, float] | None = None
    """Fixed train/val/test fractions (e.g. [0.9, 0.05, 0.05], seed 002) instead of k-fold."""
    overlap: float = Field(default=0.5, ge=0, lt=1)
    """Sliding-window overlap."""
    max_cases: int | None = Field(default=None, ge=1)
    """Validate on at most N cases (null = the whole fold)."""
    at_start: bool = False
    """Also validate the untrained network at step 0, so curves (and tests) show what training gained."""

    @model_validator(mode="after")
    def _fold_in_range(self) -> "ValidationSpec":
        if self.fold >= self.folds:
            raise ValueError(f"fold {self.fold} is out of range for folds={self.folds} (use 0..{self.folds - 1})")
        if self.split is not None and abs(sum(self.split) - 1.0) > 1e-6:
            raise ValueError(f"split {list(self.split)} must sum to 1")
        return self


class ScalingSpec(StrictModel):
    num_workers: int = Field(default=1, ge=0)
    """Ray Train workers (DDP ranks); 0 runs the loop in the driver process."""
    use_gpu: bool = False
    """One GPU per worker (nccl); false = CPU (gloo)."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    """CPUs reserved per worker (fractions allowed, e.g. 0.5 on 2-core machines)."""


class CheckpointSpec(StrictModel):
    every: int = Field(default=1000, ge=1)
    """Report a checkpoint every N steps (and at every validation)."""
    keep: int = Field(default=2, ge=1)
    """Checkpoints kept (best by `metric` plus the latest)."""
    metric: str = "val/dice_mean"
    """Metric that ranks checkpoints and picks the exported model (`train/loss`, mode min, when
    `validation.mode` is none and no metric is set)."""
    mode: Literal["max", "min"] = "max"
    """Whether larger `metric` is better."""


class TrackingSpec(StrictModel):
    mlflow: bool = True
    """Log params/metrics/artefacts to MLflow."""
    uri: str | None = None
    """MLflow tracking URI; null = a local file store under the run dir."""


class InitSpec(StrictModel):
    """Start from existing weights (fine-tuning) instead of a random initialisation: a registry entry, a voxray
    checkpoint folder or a weights file. Strict by default; the mismatch policies below are the only exceptions, and
    each one is logged. Applied when a run starts; a resumed run continues from its own checkpoint."""

    model: str | None = None
    """A registry entry `<name>` (latest version) or `<name>/<version>` under `registry`."""
    registry: ArtifactPath | None = None
    """Registry root for `model`; null = this job's `train.registry`."""
    path: ArtifactPath | None = None
    """Instead of `model`: a registry folder (`<registry>/<name>[/<version>]`), a voxray checkpoint folder (with
    state.pt), or a weights file (.safetensors, .pt/.pth state_dict, Lightning .ckpt) laid out as `format`."""
    format: Literal["voxray", "factorizer_official"] = "voxray"
    """Key layout of a weights file: voxray's own, or the official Factorizer code (pashtari/factorizer, paper-era
    SegmentationFactorizer; mapped by name, docs/finetuning.md)."""
    strict: bool = True
    """Every weight must match by name and shape, apart from the policies below; false loads what matches and
    logs the rest (left at their random initialisation)."""
    new_head: bool = False
    """Re-initialise the output head(s) when the outputs differ from the source's (another count, or other output
    names for a registry entry, e.g. 3 BraTS regions → 1 lesion); the keys are named in the log. false: an error."""
    new_channels: Literal["error", "mean", "zero"] = "error"
    """First-layer weights of input channels the source lacks: the mean over the source's channels, zeros, or an
    error. Channels the source has are matched by name (case-insensitive) or `channel_map`; extra ones are dropped."""
    channel_map: dict[str, str] = {}
    """This job's channel → the source channel whose first-layer weights it copies, e.g. {t2f: FLAIR}."""
    output_map: dict[str, str] = {}
    """This job's output → the source output whose head weights it takes, e.g. {infarct: WT} for a binary lesion
    task from a BraTS-regions model; outputs are otherwise matched by name."""
    source_channels: list[str] | None = None
    """Input-channel names of a source without a card (checkpoint folder, weights file); null = this job's channels
    in order when the counts match."""
    freeze_encoder_steps: int = Field(default=0, ge=0)
    """Keep the encoder fixed (learning rate 0 for its parameters) for the first N steps, so a new head settles
    before the pretrained features move."""
    allow_pickle: bool = False
    """Load a .pt/.ckpt file with full unpickling when torch's safe loader refuses it (the official Lightning
    checkpoints pickle classes in their hyper-parameters). Only for files you trust."""

    @model_validator(mode="after")
    def _one_source(self) -> "InitSpec":
        if (self.model is None) == (self.path is None):
            raise ValueError("set exactly one of `model` (a registry entry name[/version]) and `path`")
        for name in ("path", "registry"):
            value = getattr(self, name)
            if value is not None and is_uri(value):
                raise ValueError(f"{name} {value!r}: weights are read from a local or shared-filesystem path, "
                                 f"not a URI (copy them first)")
        if self.format != "voxray" and self.path is None:
            raise ValueError(f"format {self.format!r} describes a weights file: use `path`")
        return self


class TrainSpec(StrictModel):
    store: ArtifactPath | None = None
    """zarr store from `preprocess` (a pipeline fills it in)."""
    task: Literal["labels", "brats_regions", "binary", "multilabel"] = "labels"
    """labels: softmax multi-class; brats_regions: sigmoid ET/TC/WT from the dataset's label map;
    binary: lesion vs background; multilabel: one sigmoid channel per class (overlapping masks)."""
    channels: list[str] | None = None
    """Input channels by name (e.g. [FLAIR]) for per-modality training; null = all channels of the store."""
    model: ModelSpec = FactorizerSpec()
    """Network and its hyperparameters (see `voxray models`)."""
    init: InitSpec | None = None
    """Initial weights: null = random (from scratch); see InitSpec for fine-tuning from a model."""
    patch: list[int] = Field(default=[128, 128, 128], min_length=2, max_length=3)
    """Patch size (z, y, x); two numbers train a 2D model on slices."""
    batch_size: int = Field(default=2, ge=1)
    """Patches per worker per step."""
    steps: int = Field(default=1000, ge=1)
    """Optimiser steps."""
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    loss: LossSpec = LossSpec()
    sampling: SamplingSpec = SamplingSpec()
    augment: AugmentSpec = AugmentSpec()
    validation: ValidationSpec = ValidationSpec()
    scaling: ScalingSpec = ScalingSpec()
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    """auto = bf16 autocast on GPU, fp32 on CPU."""
    grad_clip: float | None = Field(default=12.0, gt=0)
    """Max gradient norm; null = no clipping."""
    accumulate: int = Field(default=1, ge=1)
    """Gradient accumulation steps per optimiser step."""
    seed: int = 0
    """Seed for splits, sampling, augmentation and init."""
    deterministic: bool = False
    """Force deterministic torch algorithms (slower)."""
    checkpoint: CheckpointSpec = CheckpointSpec()
    max_failures: int = Field(default=2, ge=-1)
    """Ray Train FailureConfig: restarts from the last checkpoint after a worker dies (-1 = unlimited)."""
    tracking: TrackingSpec = TrackingSpec()
    output: ArtifactPath = "work/runs"
    """Run directory root (checkpoints, metrics.csv, progress.png, MLflow)."""
    registry: ArtifactPath = "registry"
    """Model registry root; the best checkpoint is exported to <registry>/<job name>/<version>/."""
    export: bool = True
    """Export the best checkpoint to the registry at the end."""
    ensemble: Literal["none", "folds"] = "none"
    """folds: train one model per fold of `validation.folds` (fold k validates on its own held-out cases; run dirs
    and registry entries `<name>-fold<k>`), then export the ensemble `<name>` whose card lists them; prediction
    averages the members' probabilities. The summary reports each fold's and the mean validation metrics."""
    inference: InferenceSpec = InferenceSpec()
    """How the exported model predicts (window, overlap, batch, device, precision, TTA): copied into the card."""

    @model_validator(mode="after")
    def _ensemble_needs_folds(self) -> "TrainSpec":
        v = self.validation
        if self.ensemble == "folds" and (v.mode != "split" or v.split is not None):
            raise ValueError(f"ensemble folds needs k-fold validation (validation.mode split, no validation.split); "
                             f"got mode {v.mode!r}, split {list(v.split) if v.split else None}")
        return self

    @model_validator(mode="after")
    def _checkpoint_metric_without_validation(self) -> "TrainSpec":
        """With `validation.mode: none` there are no `val/` metrics: rank checkpoints by the training loss."""
        c = self.checkpoint
        if self.validation.mode != "none" or not c.metric.startswith("val/"):
            return self
        if "metric" in c.model_fields_set:
            raise ValueError(f"checkpoint.metric {c.metric!r} needs validation, but validation.mode is none "
                             f"(use train/loss, or validation.mode train_cases)")
        mode = c.mode if "mode" in c.model_fields_set else "min"
        self.checkpoint = c.model_copy(update={"metric": "train/loss", "mode": mode})
        return self

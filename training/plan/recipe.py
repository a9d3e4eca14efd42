"""`voxray plan`: a fingerprint → a complete `pipeline` (or `train`) job YAML with a reason on every derived field.

Decisions come from `decide` (spacing, resampling, normalisation, task) and `search` (network, patch, batch on
measured step costs from `memory`); steps follow from the compute budget and the measured step time. The YAML is
validated with the job loader before it is returned, so a plan is always a runnable job.
"""

from __future__ import annotations

import logging
import math
import os
import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from voxray.platform.errors import DataError
from voxray.platform.specs.train import TrainSpec
from voxray.training.plan import decide
from voxray.training.plan.fingerprint import Fingerprint
from voxray.training.plan.memory import StepCost, measure_step, time_step
from voxray.training.plan.search import BASE_WIDTHS, NetPlan, PatchPlan, factorizer_unfit, search_patch

log = logging.getLogger(__name__)

__all__ = ["PlanOptions", "Plan", "make_plan", "to_yaml", "RESERVE"]

RESERVE = 0.15
"""Share of `--memory-gb` kept free for the framework (CUDA context, cuDNN workspaces, allocator fragmentation)."""
VALIDATION_SHARE = 0.1
"""Share of the compute budget left for validation passes."""
LONG_RUN = 25_000
"""Steps from which nnU-Net's SGD + poly (built for 250,000) is planned instead of AdamW + warm-up/cosine."""
MIN_STEPS = 1000
"""Under a compute budget a step must leave room for at least this many (4 nnU-Net epochs of 250 iterations; nnU-Net
trains 1000 epochs): a CPU budget otherwise buys a few hundred steps of a network sized for a GPU, which the
benchmark (benchmarks/quality.py) showed losing to a small hand-written network trained 4× longer."""


@dataclass
class PlanOptions:
    model: str = "auto"
    """auto (swin_factorizer where its rules fit the data, else unet) | swin_factorizer | unet."""
    memory_gb: float = 16.0
    hours: float = 24.0
    steps: int | None = None
    step_seconds: float | None = None
    device: str = "auto"
    anisotropy_threshold: float = 3.0
    modalities: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    store: str | None = None
    workers: int = 1


@dataclass
class Plan:
    job: dict
    comments: dict[str, str]
    header: list[str]
    details: dict

    @property
    def kind(self) -> str:
        return self.job["kind"]

    def yaml(self) -> str:
        return to_yaml(self.job, self.comments, self.header)


def _device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: no CUDA device here", hint="plan with --device cpu (or auto)")
    return choice


def _train_base(task: str, family: str, steps: int | None = None) -> tuple[dict, str, str]:
    """Optimiser and schedule, with their reasons. Long runs (≥ LONG_RUN steps): nnU-Net's SGD + poly for the U-Net,
    the paper's AdamW 1e-4 for the Factorizer. Shorter runs (and the memory probes, since AdamW holds the most
    state): AdamW with warm-up + cosine at the rates of voxray's learning benchmark (U-Net 1e-2, Factorizer 3e-3) —
    on the quality benchmark's 1,000-step CPU runs SGD + poly reached Dice 0.937 where AdamW reached 0.959."""
    warm = {"name": "warmup_cosine", "warmup_steps": max(1, (steps or 0) // 50)}
    if steps is None or steps < LONG_RUN:
        lr = 0.01 if family == "unet" else 0.003
        return ({"task": task, "optimizer": {"name": "adamw", "lr": lr, "weight_decay": 0.01}, "schedule": warm},
                f"a short run (< {LONG_RUN} steps, a tenth of nnU-Net's): AdamW converges in fewer steps than SGD; "
                f"lr {lr:g} as voxray's learning benchmark trains this family", "warm-up (2 % of steps) + cosine")
    if family == "unet":
        return ({"task": task, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.99, "weight_decay": 3.0e-5},
                 "schedule": {"name": "poly", "power": 0.9}},
                "nnU-Net's SGD (lr 0.01, Nesterov momentum 0.99) for a long run", "nnU-Net's poly decay")
    return ({"task": task, "optimizer": {"name": "adamw", "lr": 1.0e-4, "weight_decay": 0.01}, "schedule": warm},
            "the Factorizer paper's AdamW (lr 1e-4, weight decay 0.01) for a long run",
            "the paper's warm-up (2 % of steps) + cosine")


class _Costs:
    """Measured step cost per network topology (one probe each, cached)."""

    def __init__(self, task: str, meta: dict, in_channels: int, family: str, device: str,
                 steps: int | None = None) -> None:
        self.task, self.meta, self.in_channels, self.family, self.device = task, meta, in_channels, family, device
        self.steps = steps
        """None: probe with AdamW (the most optimiser state: a search on it stays within budget for any run length)."""
        self.measured: dict[str, tuple[NetPlan, StepCost]] = {}

    def spec(self, net: NetPlan, patch: list[int], batch: int = 2) -> TrainSpec:
        return TrainSpec.model_validate({**_train_base(self.task, self.family, self.steps)[0],
                                         "loss": {"name": "dice_ce"},
                                         "model": net.model,
                                         "patch": patch, "batch_size": batch})

    def get(self, net: NetPlan) -> StepCost:
        if net.key not in self.measured:
            # smallest valid patch whose bottleneck has > 1 voxel (instance norm needs 2); the Factorizer's is 4
            probe = [d * (2 if net.model["name"] == "unet" else 1) for d in net.divisors]
            self.measured[net.key] = (net, measure_step(self.spec(net, probe), self.meta, self.in_channels, probe,
                                                        device=self.device))
        return self.measured[net.key][1]


def _family(fp: Fingerprint, opts: PlanOptions, median: list[float], spacing: list[float]) -> tuple[str, str]:
    if opts.model not in ("auto", "unet", "swin_factorizer"):
        raise DataError(f"--model {opts.model!r}: plan supports auto, unet and swin_factorizer")
    unfit = factorizer_unfit(median, spacing)
    if opts.model == "unet":
        return "unet", "chosen with --model unet"
    if opts.model == "swin_factorizer":
        if unfit:
            raise DataError(unfit.split(":")[0], hint="plan with --model unet or --model auto")
        return "swin_factorizer", "chosen with --model swin_factorizer"
    if unfit:
        return "unet", unfit
    return "swin_factorizer", "auto: voxray's main model; the data is near-isotropic and large enough for its rules"


def _span(hours: float) -> str:
    """A compute budget as people write it: '24 h', '90 min', '45 s'."""
    if hours >= 1:
        return f"{hours:g} h"
    return f"{hours * 60:.3g} min" if hours * 60 >= 1 else f"{hours * 3600:.3g} s"


def _limits(opts: PlanOptions) -> tuple[float, float | None]:
    """(memory budget in bytes, seconds one step may take so MIN_STEPS fit the compute budget, or None)."""
    memory = opts.memory_gb * 2**30 * (1 - RESERVE)
    if opts.steps or opts.step_seconds:  # a fixed step count, or times of another machine: no time rule here
        return memory, None
    return memory, opts.hours * 3600 * (1 - VALIDATION_SHARE) / MIN_STEPS


def _fit(fp: Fingerprint, opts: PlanOptions, task: str, family: str, median: list[float], spacing: list[float],
         device: str) -> tuple[PatchPlan, _Costs, str]:
    """Widest network (first level 32, 16, 8) that fits memory and, under a compute budget, MIN_STEPS steps without
    a smaller patch than memory alone allows: the compute budget narrows the network, and shrinks the patch (the
    context nnU-Net puts first) only when even the narrowest network needs it."""
    memory, seconds = _limits(opts)
    tried: list[str] = []
    best: tuple[PatchPlan, _Costs] | None = None
    for base in BASE_WIDTHS:
        costs = _Costs(task, fp.meta, len(fp.channels), family, device)

        def share(net: NetPlan, patch: list[int], batch: int, costs: _Costs = costs, timed: bool = True) -> float:
            c = costs.get(net)
            late = c.seconds(patch, batch) / seconds if seconds and timed else 0.0
            return max(c.memory(patch, batch) / memory, late)

        try:
            found = search_patch(family, median, spacing, fp.cases, 1.0, share, base=base)
        except DataError as exc:
            tried.append(f"widths from {base}: {exc}")
            continue
        best = (found, costs)
        if seconds is None:
            break
        roomy = search_patch(family, median, spacing, fp.cases, 1.0,
                             lambda n, p, b, c=costs: share(n, p, b, c, timed=False), base=base)
        if math.prod(found.patch) >= math.prod(roomy.patch):
            break
        tried.append(f"widths from {base} would cut the patch from {'×'.join(map(str, roomy.patch))} to "
                     f"{'×'.join(map(str, found.patch))} to fit {MIN_STEPS} steps")
    if best is None:
        raise DataError(f"no {family} fits: " + "; ".join(tried), hint="raise --memory-gb or --hours")
    note = ("" if not tried else "; narrower than nnU-Net's 32 because " + "; ".join(tried)
            + f" in {_span(opts.hours)} (at least {MIN_STEPS} steps, 4 nnU-Net epochs)")
    return best[0], best[1], note


def _search(fp: Fingerprint, opts: PlanOptions, task: str, median: list[float], spacing: list[float], device: str
            ) -> tuple[str, str, PatchPlan, _Costs]:
    family, why = _family(fp, opts, median, spacing)
    try:
        found, costs, note = _fit(fp, opts, task, family, median, spacing, device)
    except DataError as exc:
        if opts.model != "auto" or family == "unet":
            raise
        why = f"auto: {exc} — unet instead"
        family = "unet"
        found, costs, note = _fit(fp, opts, task, family, median, spacing, device)
    return family, why + note, found, costs


def _relpath(target: str, out_dir: Path) -> str:
    if "://" in target:
        return target
    try:
        return os.path.relpath(Path(target).resolve(), out_dir.resolve())
    except ValueError:  # another drive (Windows)
        return str(Path(target).resolve())


def _name(fp: Fingerprint, opts: PlanOptions) -> str:
    raw = opts.name or f"{fp.meta.get('layout') or 'dataset'}-plan"
    return re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._")[:64] or "plan"


def make_plan(fp: Fingerprint, opts: PlanOptions, out_dir: str | Path = ".") -> Plan:
    """Plan a job for `fp`; `out_dir` is where the YAML will live (its relative paths resolve against it)."""
    from voxray.platform.specs.loader import validate_job

    out_dir = Path(out_dir)
    if fp.meta.get("slice_axis") is not None:
        raise DataError(f"layout {fp.meta.get('layout')!r} is a 2D slice layout; voxray plan plans 3D datasets",
                        hint="start from examples/jobs/ for 2D seeds")
    device = _device(opts.device)
    c: dict[str, str] = {}
    spacing = decide.target_spacing(fp, opts.anisotropy_threshold)
    target = spacing.value
    resampling = decide.resampling(fp, target, opts.anisotropy_threshold)
    norm = decide.normalisation(fp, opts.modalities)
    task = decide.task(fp)
    median = decide.median_shape(fp, target)
    family, why_model, found, costs = _search(fp, opts, task.value, median, target, device)
    net, cost = found.net, costs.get(found.net)
    if opts.step_seconds:
        step_s = opts.step_seconds
    elif opts.steps:  # nothing depends on it: the probe's estimate, for the report
        step_s = cost.seconds(found.patch, found.batch)
    else:
        spec = costs.spec(net, found.patch, found.batch)
        step_s = time_step(spec, fp.meta, len(fp.channels), device=device)
    if opts.steps:
        steps, why_steps = int(opts.steps), "given with --steps"
    else:
        steps = max(2, int(opts.hours * 3600 * (1 - VALIDATION_SHARE) / step_s))
        why_steps = (f"{_span(opts.hours)} × {1 - VALIDATION_SHARE:.0%} (the rest validates) / {step_s:.3g} s per step "
                     + ("(given with --step-seconds)" if opts.step_seconds else
                        f"(timed on this {device} at the planned patch and batch, best of 3)"))
    if _train_base(task.value, family, steps)[0]["optimizer"]["name"] != "adamw":
        # a long run trains with SGD (one state tensor per parameter, not two): report its own measured memory
        costs = _Costs(task.value, fp.meta, len(fp.channels), family, device, steps)
        cost = costs.get(net)
    every = max(1, steps // 10)
    name = _name(fp, opts)
    pre, pre_c = _preprocess_section(fp, opts, name, spacing, resampling, norm, found, out_dir)
    train, train_c = _train_section(fp, opts, task, family, why_model, found, steps, why_steps, every, device)
    if pre is None:
        job = {"kind": "train", "name": name, "train": {"store": _relpath(fp.store, out_dir), **train}}
        c["train.store"] = "the planned store already matches this plan (spacing, resampling, normalisation)"
    else:
        job = {"kind": "pipeline", "name": name, "preprocess": pre, "train": train}
        c.update({f"preprocess.{k}": v for k, v in pre_c.items()})
    c.update({f"train.{k}": v for k, v in train_c.items()})
    c["kind"] = "preprocess + train" if pre is not None else "train on the existing store"
    c["name"] = "names the run directory and the registry entry"
    validate_job(yaml.safe_load(to_yaml(job, {}, [])), source="voxray plan", base_dir=out_dir)
    details = _details(fp, opts, device, spacing, resampling, norm, family, found, costs, steps, step_s)
    header = _header(fp, device, found, cost, opts)
    return Plan(job, c, header, details)


def _store_matches(fp: Fingerprint, target: list[float], resampling: dict, normalize: str) -> bool:
    t = fp.store_transform or {}
    have = t.get("spacing")
    same_spacing = have is not None and all(abs(a - b) < 1e-3 for a, b in zip(have, target[::-1]))
    res = t.get("resampling") or {"scheme": "linear"}
    return same_spacing and res.get("scheme") == resampling["scheme"] and t.get("normalize") == normalize


def _preprocess_section(fp, opts, name, spacing, resampling, norm, found: PatchPlan, out_dir: Path):
    target = spacing.value
    if fp.store is not None and _store_matches(fp, target, resampling.value, norm["normalize"].value):
        return None, {}
    if fp.dataset is None:
        raise DataError(f"{fp.store}: the store's spacing/resampling/normalisation differ from the plan and its "
                        "resolved job does not say which dataset it came from",
                        hint="plan from the dataset instead: voxray plan DATASET_ROOT --layout …")
    dataset = {**fp.dataset, "root": _relpath(fp.dataset["root"], out_dir)}
    store = opts.store or f"work/{name}.zarr"
    sec: dict[str, Any] = {"dataset": dataset, "store": store if opts.store is None else _relpath(store, out_dir),
                           "spacing": [round(s, 5) for s in target[::-1]], "resampling": resampling.value,
                           "normalize": norm["normalize"].value}
    c = {"dataset": f"read through the {dataset['layout']} adapter ({fp.cases} cases, geometry from {fp.source})",
         "store": "zarr store the preprocess stage writes and training reads",
         "spacing": f"(x, y, z) mm: {spacing.why}",
         "resampling": resampling.why, "normalize": norm["normalize"].why}
    for key in ("clip", "ct_stats"):
        if key in norm:
            sec[key], c[key] = norm[key].value, norm[key].why
    sec["chunk"] = [min(64, p) for p in found.patch]
    c["chunk"] = "patch-shaped up to 64 per axis (64³ chunks read 128³ patches fastest in benchmarks/store.py)"
    return sec, c


def _train_section(fp, opts, task, family, why_model, found: PatchPlan, steps, why_steps, every, device):
    net = found.net
    base, why_opt, why_sched = _train_base(task.value, family, steps)
    labelled = fp.labelled or fp.cases
    validation = {"mode": "split", "folds": min(5, labelled), "every": every} if labelled >= 2 else \
        {"mode": "train_cases", "every": every}
    sec = {"task": base["task"], "model": net.model, "patch": found.patch, "batch_size": found.batch, "steps": steps,
           "optimizer": base["optimizer"], "schedule": base["schedule"], "loss": {"name": "dice_ce"},
           "sampling": {"fg_fraction": 0.33}, "validation": validation, "checkpoint": {"every": every},
           "scaling": {"num_workers": opts.workers, "use_gpu": device == "cuda"}}
    c = {"task": task.why, "model": f"{family}: {why_model}; {net.why}",
         "patch": f"(z, y, x) {found.why_patch}; a {'cubic' if len(set(found.patch)) == 1 else 'non-cubic'} patch; "
                  f"budget: {opts.memory_gb:g} GiB" + (f" and ≥ {MIN_STEPS} steps in {_span(opts.hours)}"
                                                        if _limits(opts)[1] else ""),
         "batch_size": f"{found.why_batch} (memory{' and time per step' if _limits(opts)[1] else ''})",
         "steps": why_steps,
         "optimizer": why_opt, "schedule": why_sched,
         "loss": "Dice + cross-entropy (nnU-Net and the Factorizer paper)",
         "sampling": "a third of patches centred on foreground (nnU-Net's 33 % oversampling)",
         "validation": ("k-fold over the labelled cases, validated 10 times over the run" if labelled >= 2 else
                        "one labelled case: validate on the training case (fit, not generalisation)"),
         "checkpoint": "a checkpoint at every validation",
         "scaling": f"{opts.workers} worker(s) on {'GPU' if device == 'cuda' else 'CPU'}, as measured"}
    return sec, c


def _details(fp, opts, device, spacing, resampling, norm, family, found: PatchPlan, costs: _Costs, steps, step_s
             ) -> dict:
    cost = costs.get(found.net)
    return {"source": fp.source, "cases": fp.cases, "device": device, "memory_gb": opts.memory_gb,
            "budget_bytes": opts.memory_gb * 2**30 * (1 - RESERVE), "target_spacing_zyx": spacing.value,
            "resampling": resampling.value, "normalize": {k: d.value for k, d in norm.items()}, "family": family,
            "model": found.net.model, "patch": found.patch, "batch_size": found.batch,
            "estimated_bytes": cost.memory(found.patch, found.batch), "estimated_step_peak_bytes": cost.step_peak(found.patch, found.batch),
            "static_bytes": cost.static, "step_seconds": step_s, "steps": steps, "search": found.trail,
            "cost": cost.to_dict(), "probes_measured": len(costs.measured),
            "median_shape_zyx": decide.median_shape(fp, spacing.value)}


def _header(fp: Fingerprint, device: str, found: PatchPlan, cost: StepCost, opts: PlanOptions) -> list[str]:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    probes = ", ".join(f"batch {b}: {p / 2**20:.1f} MiB" for b, p, _ in cost.probes)
    return [f"planned by `voxray plan` on {when} from {fp.cases} cases ({fp.source}); edit freely, every derived "
            "field says why it has its value.",
            f"memory: {cost.memory(found.patch, found.batch) / 2**30:.3f} GiB estimated for patch {'×'.join(map(str, found.patch))} batch "
            f"{found.batch} of a {opts.memory_gb:g} GiB budget ({RESERVE:.0%} kept free), from a {device} probe of "
            f"the real network at {'×'.join(map(str, cost.probe_patch))} ({probes}; {cost.per_voxel:.0f} B per "
            f"sample-voxel, {cost.static / 2**20:.1f} MiB parameters + optimiser state).",
            "CPU probes count fp32 tensors; bf16 autocast on a GPU needs less."]


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text[:-4].strip() if text.endswith("\n...") else text


def to_yaml(data: dict, comments: dict[str, str], header: list[str], width: int = 118) -> str:
    """Block-style YAML of nested dicts (lists in flow style) with `comments[dotted.path]` above each key."""
    lines = [f"# {t}" for h in header for t in textwrap.wrap(h, width - 2)]

    def emit(obj: dict, path: str, indent: int) -> None:
        pad = " " * indent
        for key, value in obj.items():
            p = f"{path}.{key}" if path else key
            if comments.get(p):
                lines.extend(f"{pad}# {t}" for t in textwrap.wrap(comments[p], width - indent - 2))
            if isinstance(value, dict) and value:
                lines.append(f"{pad}{key}:")
                emit(value, p, indent + 2)
            else:
                lines.append(f"{pad}{key}: {_scalar(value)}")

    emit(data, "", 0)
    return "\n".join(lines) + "\n"

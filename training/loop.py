"""`train_loop(config)`: the per-worker training function, plain PyTorch.

Called directly (tests, `num_workers: 0`) or by Ray Train's TorchTrainer on every worker (`config["in_ray"]`).
Ray touches only `prepare_model` (DDP) and the reporter (`ray.train.report` / `get_checkpoint`). The pieces
(`build_network`, `build_optimizer`, `train_step`, `validate`) are separate functions composed here.

config: {"train": TrainSpec as JSON dict, "name": job name, "run_dir": str, "in_ray": bool}.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from voxray.platform.specs.train import TrainSpec
from voxray.training import tasks
from voxray.training.checkpoint import LocalReporter, RayReporter, capture_state, load_state, set_rng_state, unwrap
from voxray.training.data import PatchBatches, channel_indices, load_or_make_split, shard
from voxray.training.inference import autocast
from voxray.training.init import init_weights, param_groups
from voxray.training.losses import build_loss
from voxray.training.rundir import TRACKING, RunDir
from voxray.training.schedules import build_scheduler, restore_scheduler
from voxray.training.tracking import Tracker
from voxray.training.validation import validate, validate_baseline

log = logging.getLogger(__name__)

__all__ = ["train_loop", "build_network", "build_optimizer", "train_step", "open_store", "NAN_KEY", "STOPPED_FILE"]

NAN_KEY = "stopped/nan_loss_at_step"
STOPPED_FILE = "stopped.json"
"""Written by rank 0 when a NaN loss stops the run (the runner turns it into JobFailed)."""


def open_store(uri: str):
    from voxray.preprocessing.store import Store

    return Store.open(uri)


def _dist_env(in_ray: bool) -> tuple[int, int, torch.device]:
    if in_ray:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device()
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_network(spec: TrainSpec, *, in_channels: int, out_channels: int) -> nn.Module:
    from voxray.training.models import build_model

    return build_model(spec.model, in_channels=in_channels, out_channels=out_channels,
                       spatial_dims=len(spec.patch), patch=list(spec.patch))


def build_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    """AdamW (weight decay on all parameters, as the Factorizer recipe) or SGD with Nesterov momentum."""
    o, params = spec.optimizer, param_groups(model, spec)  # two groups when train.init freezes the encoder
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)


def train_step(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, scheduler, *, device: torch.device, precision: str = "auto",
               grad_clip: float | None = None) -> float:
    """One optimiser step over `len(batches)` accumulated micro-batches; returns the mean loss."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    total = 0.0
    for i, (x, y) in enumerate(batches):
        last = i == len(batches) - 1
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(device, precision):
                out = model(x.to(device, non_blocking=True))
            loss = loss_fn(out, y.to(device, non_blocking=True)) / len(batches)
            loss.backward()
        total += float(loss.detach())
    if math.isfinite(total):
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    scheduler.step()
    return total


def _mean_over_ranks(value: float, device: torch.device) -> float:
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def _gather(obj: Any) -> list[Any]:
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _setup(config: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the loop needs, built from the config (store, split, model, optimiser, loader, reporter)."""
    spec = TrainSpec.model_validate(config["train"])
    rd, in_ray = RunDir.from_config(config), bool(config.get("in_ray"))
    run_dir = rd.local
    rank, world, device = _dist_env(in_ray)
    pid_dir = run_dir / "workers"  # who is training right now (ops, and the worker-kill reliability test)
    pid_dir.mkdir(parents=True, exist_ok=True)
    (pid_dir / f"rank{rank}.pid").write_text(str(os.getpid()))
    if rd.remote:  # the object store holds the run: the driver's split, and for rank 0 the tracking history so far
        rd.pull("split.json", keep_missing=True)  # (a Tune trial has none there yet: it makes its own below)
        if rank == 0:
            rd.pull(*TRACKING)
    seed_everything(spec.seed + rank, spec.deterministic)
    store = open_store(spec.store)
    meta = store.metadata()
    split = load_or_make_split(run_dir / "split.json", store, spec.validation, spec.seed)
    if rank == 0:
        rd.push("split.json")
    chans = channel_indices(store.channels, spec.channels)
    in_ch = len(chans) if chans is not None else len(store.channels)
    model = build_network(spec, in_channels=in_ch, out_channels=tasks.num_outputs(spec.task, meta))
    if in_ray:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
    else:
        model = model.to(device)
    optimizer = build_optimizer(model, spec)
    s = spec.sampling
    loader = PatchBatches(store, shard(split["train"], rank, world), patch=spec.patch, batch_size=spec.batch_size,
                          task=spec.task, meta=meta, channels=chans, fg_fraction=s.fg_fraction,
                          slice_mode=s.slice_mode, augment=spec.augment, workers=s.loader_workers,
                          seed=spec.seed * 1000 + rank)
    c = spec.checkpoint
    reporter = RayReporter() if in_ray else LocalReporter(run_dir, keep=c.keep, metric=c.metric, mode=c.mode)
    return dict(spec=spec, rd=rd, run_dir=run_dir, rank=rank, world=world, device=device, store=store, meta=meta,
                split=split, chans=chans, model=model, optimizer=optimizer, loader=loader, reporter=reporter,
                scheduler=build_scheduler(optimizer, spec.schedule, spec.steps), loss_fn=build_loss(spec.loss, spec.task))


def _restore(env: dict[str, Any]) -> dict[str, Any]:
    """Load the latest checkpoint (if any) into model/optimizer/scheduler/loader; returns its extra state."""
    folder = env["reporter"].restore_dir()
    if folder is None:  # a fresh run: random weights, or train.init's (fine-tuning, training/init.py)
        return {"step": 0, "best": None, "last_val": {}, "lineage": init_weights(env)}
    state = load_state(folder)
    unwrap(env["model"]).load_state_dict(state["model"])
    env["optimizer"].load_state_dict(state["optimizer"])
    spec = env["spec"]  # a changed train.steps continues with a new lr tail (logged), not a jump
    restore_scheduler(env["scheduler"], state["scheduler"], step=int(state["step"]), total_steps=spec.steps,
                      spec=spec.schedule)
    samplers = state.get("samplers") or []
    if len(samplers) == env["world"]:
        env["loader"].set_state(samplers[env["rank"]])
    if env["rank"] == 0:
        set_rng_state(state["rng"])
    else:
        torch.manual_seed(env["spec"].seed + env["rank"] + state["step"])
    log.info("resumed from %s at step %d", folder, state["step"])
    return {"step": int(state["step"]), "best": state.get("best"), "last_val": state.get("last_val", {}),
            "lineage": state.get("lineage")}


def _tracker(env: dict[str, Any], config: Mapping[str, Any], start: int) -> Tracker | None:
    if env["rank"] != 0:
        return None
    spec = env["spec"]
    return Tracker(env["run_dir"], mlflow_enabled=spec.tracking.mlflow, uri=spec.tracking.uri,
                   experiment=config.get("name", "voxray"), params={"train": config["train"]}, start_step=start)


def _due(step: int, every: int, total: int) -> bool:
    return step % every == 0 or step == total


def _report(env: dict[str, Any], step: int, metrics: dict, progress: dict, with_ckpt: bool) -> None:
    """All ranks call this: gathers sampler states, rank 0 attaches the checkpoint."""
    samplers = _gather(env["loader"].state()) if with_ckpt else None
    state = None
    if with_ckpt and env["rank"] == 0:
        state = capture_state(env["model"], env["optimizer"], env["scheduler"], step, samplers=samplers,
                              best=progress.get("best"), last_val=progress.get("last_val", {}),
                              lineage=progress.get("lineage"))
    env["reporter"].report(metrics, state, env["rank"])


def _run_validation(env, step, tracker, progress, ranks: bool = True) -> dict[str, float]:
    """Validate on every rank (each its share of the cases; see validation.py), track on rank 0; `ranks` False (the
    untrained step-0 look) keeps the figures out of checkpoint ranking. All ranks must call it together."""
    spec, rank, world = env["spec"], env["rank"], env["world"]
    lead = rank == 0
    metrics = validate(unwrap(env["model"]), env["store"], env["split"]["val"], spec, env["meta"],
                       channels=env["chans"], device=env["device"], step=step,
                       overlay_dir=env["run_dir"] / "overlays" if lead else None, tracker=tracker,
                       on_case=(lambda done, total: tracker.validation_progress(step, done, total)) if lead else None,
                       rank=rank, world=world)
    if "baseline" not in progress:  # once per run: the non-learned reference beside every val/dice
        progress["baseline"] = validate_baseline(env["store"], env["split"]["train"], env["split"]["val"], spec,
                                                 env["meta"], channels=env["chans"], rank=rank, world=world)
    metrics.update(progress["baseline"])
    if not lead:
        return {}
    tracker.log(step, metrics)
    tracker.plot()
    env["rd"].push(*TRACKING)
    if not ranks:
        return metrics
    value = metrics.get(spec.checkpoint.metric)
    best = progress.get("best")
    if value is not None and np.isfinite(value) and (
            best is None or (value > best if spec.checkpoint.mode == "max" else value < best)):
        progress["best"] = value
    progress["last_val"] = metrics
    return metrics


def _score(env: dict[str, Any], progress: dict) -> dict[str, float]:
    """Metrics every report carries: the last validation (so CheckpointConfig can rank every checkpoint)."""
    spec = env["spec"]
    out = dict(progress.get("last_val") or {})
    worst = -1e30 if spec.checkpoint.mode == "max" else 1e30
    out.setdefault(spec.checkpoint.metric, worst)
    return out


def train_loop(config: Mapping[str, Any]) -> dict[str, float]:
    """Train `config["train"]` to `steps`, validating and checkpointing on schedule; returns the last metrics.

    A NaN/inf loss stops the run (all ranks agree) and reports `stopped/nan_loss_at_step` without a checkpoint,
    so the last good checkpoint stays the latest; the runner turns it into a JobFailed.
    """
    env = _setup(config)
    spec, loader = env["spec"], env["loader"]
    progress = _restore(env)
    start = progress["step"]
    tracker = _tracker(env, config, start)
    step, t0, metrics = start, time.monotonic(), {}
    since_report: list[float] = []  # losses since the last report: their mean ranks checkpoints without validation
    validating = spec.validation.mode != "none"
    if validating and spec.validation.at_start and start == 0:
        _run_validation(env, 0, tracker, progress, ranks=False)
    try:
        while step < spec.steps:
            batches = [next(loader) for _ in range(spec.accumulate)]
            loss = _mean_over_ranks(train_step(env["model"], batches, env["loss_fn"], env["optimizer"],
                                               env["scheduler"], device=env["device"], precision=spec.precision,
                                               grad_clip=spec.grad_clip), env["device"])
            step += 1
            if not math.isfinite(loss):
                env["reporter"].report({**_score(env, progress), NAN_KEY: step, "step": step}, None, env["rank"])
                if tracker:
                    tracker.log(step, {"train/loss": loss}, mlflow=False)
                    env["rd"].write_text(STOPPED_FILE, json.dumps({"nan_loss_at_step": step}))
                log.error("loss became %s at step %d; stopped, the last good checkpoint is kept", loss, step)
                return {NAN_KEY: float(step)}
            since_report.append(loss)
            lr = env["optimizer"].param_groups[-1]["lr"]  # the last group is never frozen (train.init)
            if tracker:
                its = (step - start) / max(time.monotonic() - t0, 1e-9)
                tracker.progress(step, spec.steps, loss, lr, its, force=step == spec.steps)
                if _due(step, max(1, spec.steps // 200), spec.steps):
                    tracker.log(step, {"train/loss": loss, "train/lr": lr}, mlflow=_due(step, 10, spec.steps))
            val_now = validating and _due(step, spec.validation.every, spec.steps)
            if val_now:
                _run_validation(env, step, tracker, progress)
            if val_now or _due(step, spec.checkpoint.every, spec.steps):
                metrics = {**_score(env, progress), "step": step, "train/loss": float(np.mean(since_report))}
                since_report.clear()
                _report(env, step, metrics, progress, with_ckpt=True)
        if start >= spec.steps:  # a finished run restarted: report once so Ray has its final metrics
            metrics = {**_score(env, progress), "step": step}
            env["reporter"].report(metrics, None, env["rank"])
    finally:
        loader.close()
        if tracker:
            tracker.close()
            env["rd"].push(*TRACKING)
    return metrics
